
de-enÖffnen Sie die Datei.Ouvrez le fichier.	日本語@��? ("batch-7