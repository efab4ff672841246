
en-deOpen the file."req-1