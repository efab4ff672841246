
en-dex"tab	here