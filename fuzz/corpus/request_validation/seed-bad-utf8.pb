
en-deok
bad ÿ byteí €