
en-de