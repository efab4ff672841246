"""Corpus building on small in-memory inputs: .mo reading, help alignment, cleaning, split.

Needs neither network nor the Debian packages.
"""

import os
import struct
import sys
import tempfile
import unittest

TRAINING_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if TRAINING_DIR not in sys.path:
    sys.path.insert(0, TRAINING_DIR)

import build_corpus as bc  # noqa: E402
import debconf_templates as dct  # noqa: E402


def write_mo(path, messages):
    """Writes a little-endian GNU .mo file of {key: value} (key may hold ctxt\\x04 / plurals)."""
    items = sorted((k.encode(), v.encode()) for k, v in messages.items())
    count = len(items)
    strings_start = 28 + 16 * count
    blob, originals, translations = b"", [], []
    for table, index in ((originals, 0), (translations, 1)):
        for item in items:
            table.append((len(item[index]), strings_start + len(blob)))
            blob += item[index] + b"\0"
    header = struct.pack("<7I", 0x950412DE, 0, count, 28, 28 + 8 * count, 0, 0)
    tables = b"".join(struct.pack("<2I", *entry) for entry in originals + translations)
    with open(path, "wb") as f:
        f.write(header + tables + blob)


class ReadMo(unittest.TestCase):
    def test_entries_context_plural_and_header(self):
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "x.mo")
            write_mo(path, {"": "Content-Type: text/plain; charset=UTF-8\n",
                            "Menu|FileLabel\x04~File": "~Datei",
                            "%1 file\x00%1 files": "%1 Datei\x00%1 Dateien",
                            "Untranslated": ""})
            entries = sorted(bc.read_mo(path))
            self.assertEqual(entries, [("", "%1 file", "%1 Datei"), ("", "Untranslated", ""),
                                       ("Menu|FileLabel", "~File", "~Datei")])
            self.assertEqual(sorted(bc.ui_pairs(directory)), [("%1 file", "%1 Datei"), ("~File", "~Datei")])

    def test_rejects_other_files(self):
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "bad.mo")
            with open(path, "wb") as f:
                f.write(b"\0" * 32)
            with self.assertRaises(ValueError):
                list(bc.read_mo(path))


HELP_EN = """<html><body><div id="DisplayArea">
<h1 id="hd_id1" dir="auto">Inserting <span class="emph">Tables</span></h1>
<p id="par_id2" class="paragraph">Press <span class="switchinline"><span hidden="true" id="MACx_1" class="MAC">Command</span><span hidden="true" id="defaultx_1"><span class="keycode">Ctrl</span></span></span>+T. Then type.</p>
<p id="par_id3">Only English.</p>
<p id="par_id4">Same id.</p><p id="par_id4">Same id again.</p>
<p>No id, ignored.</p>
</div></body></html>"""

HELP_DE = """<html><body><div id="DisplayArea">
<h1 id="hd_id1" dir="auto">Tabellen <span class="emph">einfügen</span></h1>
<p id="par_id2" class="paragraph">Drücken Sie <span class="switchinline"><span hidden="true" id="MACx_1" class="MAC">Befehl</span><span hidden="true" id="defaultx_1"><span class="keycode">Strg</span></span></span>+T. Dann tippen.</p>
<p id="par_id4">Gleiche ID.</p><p id="par_id4">Gleiche ID nochmal.</p>
</div></body></html>"""


class HelpAlignment(unittest.TestCase):
    def parse(self, text):
        parser = bc._HelpParagraphs()
        parser.feed(text)
        parser.close()
        return parser.paragraphs

    def test_paragraphs_keep_default_switch_and_number_repeated_ids(self):
        paragraphs = self.parse(HELP_EN)
        self.assertEqual(paragraphs["hd_id1#1"], "Inserting Tables")
        self.assertEqual(paragraphs["par_id2#1"], "Press Ctrl+T. Then type.")   # not "CommandCtrl"
        self.assertEqual(paragraphs["par_id4#2"], "Same id again.")
        self.assertEqual(len(paragraphs), 5)

    def test_pairs_by_page_and_id_then_sentences(self):
        english = {"text/a.html": self.parse(HELP_EN)}
        german = {"text/a.html": self.parse(HELP_DE)}
        pairs = bc.help_pairs(english, german)
        self.assertEqual(pairs, [("Inserting Tables", "Tabellen einfügen"),
                                 ("Press Ctrl+T.", "Drücken Sie Strg+T."), ("Then type.", "Dann tippen."),
                                 ("Same id.", "Gleiche ID."), ("Same id again.", "Gleiche ID nochmal.")])

    def test_sentence_split(self):
        self.assertEqual(bc.split_sentences("One. Two!  Three? four. 3.5 is «Five». (Six)"),
                         ["One.", "Two!", "Three? four. 3.5 is «Five».", "(Six)"])
        self.assertEqual(bc.split_sentences("Это первое. Это второе."), ["Это первое.", "Это второе."])

    def test_unequal_sentence_counts_keep_the_paragraph(self):
        self.assertEqual(bc.align_sentences("A b. C d.", "E f g h."), [("A b. C d.", "E f g h.")])
        self.assertEqual(bc.align_sentences("A b. C d.", "E f. G h."), [("A b.", "E f."), ("C d.", "G h.")])


class Cleaning(unittest.TestCase):
    def test_markup(self):
        self.assertEqual(bc.clean_text('<ahelp hid=".">Opens</ahelp> the <b>dialog</b>.', ui=False), "Opens the dialog.")
        self.assertEqual(bc.clean_text("Use &lt;none&gt; &amp; more<br/>", ui=False), "Use <none> & more")
        self.assertEqual(bc.clean_text("<font size=2>Small</font>", ui=False), "Small")
        self.assertEqual(bc.clean_text("line<br>break<BR/>here", ui=False), "line break here")

    def test_accelerators_only_in_ui_strings(self):
        self.assertEqual(bc.clean_text("E~xtension", ui=True), "Extension")
        self.assertEqual(bc.clean_text("Fiel_d", ui=True), "Field")
        self.assertEqual(bc.clean_text("Save &As", ui=True), "Save As")
        self.assertEqual(bc.clean_text("Find & Replace", ui=True), "Find & Replace")
        self.assertEqual(bc.clean_text("major&minor", ui=True), "major&minor")
        self.assertEqual(bc.clean_text("LCM_EXCEL_2003", ui=True), "LCM_EXCEL_2003")   # an identifier
        self.assertEqual(bc.clean_text("Complex_number", ui=False), "Complex_number")  # help text

    def test_product_variables_placeholders_and_normalization(self):
        self.assertEqual(bc.clean_text("%PRODUCTNAME %PRODUCTVERSION and $[officename]", ui=True),
                         "LibreOffice 7.4 and LibreOffice")
        self.assertEqual(bc.placeholders("Row %1 of $(ARG1): %s, %FILENAME and $name"),
                         ["$(ARG1)", "$name", "%1", "%FILENAME", "%s"])
        self.assertEqual(bc.placeholders("100% done"), [])
        # NFKC (as SentencePiece's normalizer) and whitespace collapsing.
        self.assertEqual(bc.clean_text("Open\u2026 \u00a0now \n\t ok", ui=False), "Open... now ok")

    def test_clean_pair_reasons(self):
        cases = [
            (("Open file", "Datei öffnen"), "kept"),
            (("<b></b>", "x"), "empty"),
            (("1.", "1,"), "no_letters"),
            (("Version", "Version"), "untranslated"),
            (("word " * 50, "Wort " * 50), "too_long"),
            (("Insert a table right here now", "Einfügen"), "length_ratio"),
            (("Copy %1 to %2", "Kopiere %1"), "placeholders"),
            (("Up", "Nach oben"), "kept"),                 # short labels are exempt from the ratio
            (("Copy %1 to %2", "%2 aus %1 kopieren"), "kept"),   # same placeholders, any order
        ]
        for (en, xx), reason in cases:
            with self.subTest(en=en):
                pair, got = bc.clean_pair(en, xx, ui=True)
                self.assertEqual(got, reason)
                self.assertEqual(pair is not None, reason == "kept")

    def test_length_ratio(self):
        self.assertTrue(bc.length_ratio_ok("a" * 30, "b" * 90, 3.0))
        self.assertFalse(bc.length_ratio_ok("a" * 30, "b" * 91, 3.0))
        self.assertTrue(bc.length_ratio_ok("a", "b" * 11, 3.0))

    def test_dedupe_is_one_to_one(self):
        pairs = [("Open", "Öffnen"), ("Open", "Öffnen"), ("Open", "Aufmachen"),
                 ("Show", "Anzeigen"), ("Display", "Anzeigen"), ("Display", "Anzeigen"), ("Close", "Schließen")]
        result = bc.dedupe(pairs)
        self.assertEqual(result, [("Close", "Schließen"), ("Display", "Anzeigen"), ("Open", "Öffnen")])

    def test_parse_languages(self):
        self.assertEqual(bc.parse_languages("de, pt=pt-br"), {"de": "de", "pt": "pt-br"})
        for bad in ("en", "pt-br", "DE"):
            with self.assertRaises(SystemExit):
                bc.parse_languages(bad)


class GettextCatalogs(unittest.TestCase):
    def test_reads_every_catalog_of_the_locale_but_reserved_ones(self):
        with tempfile.TemporaryDirectory() as root:
            for locale, messages in (("pt_BR", {"Open": "Abrir", "Usage: %s\n  -a  all": "Uso: %s\n  -a  tudo"}),
                                     ("pt", {"Open": "Abrir (pt)"})):
                catalogs = os.path.join(root, "usr/share/locale", locale, "LC_MESSAGES")
                os.makedirs(catalogs)
                write_mo(os.path.join(catalogs, "gtk30.mo"), messages)
                # A reserved program's catalog: never read, only counted as skipped.
                write_mo(os.path.join(catalogs, "gimp20-std-plug-ins.mo"), {"Blur": "Desfocar"})
            pairs, counts = bc.gettext_pairs(root, bc.gettext_locales("pt", "pt-br"))
            self.assertEqual(sorted(pairs), [("  -a  all", "  -a  tudo"), ("Open", "Abrir"),
                                             ("Usage: %s", "Uso: %s")])
            self.assertEqual(counts, {"gtk30": 3, "reserved:gimp20-std-plug-ins": 0})
            # No locale directory at all: nothing, not an error.
            self.assertEqual(bc.gettext_pairs(root, ["ru"]), ([], {}))

    def test_catalog_charset_and_unreadable_catalogs(self):
        with tempfile.TemporaryDirectory() as root:
            catalogs = os.path.join(root, "usr/share/locale/ru/LC_MESSAGES")
            os.makedirs(catalogs)
            # A KOI8-R catalog, as some old GNU packages still ship: decoded by its header.
            path = os.path.join(catalogs, "old.mo")
            write_mo(path, {"": "Content-Type: text/plain; charset=KOI8-R\n", "File": "XXXX"})
            with open(path, "rb") as f:
                data = f.read()
            with open(path, "wb") as f:
                f.write(data.replace(b"XXXX", "Файл".encode("koi8-r")))
            with open(os.path.join(catalogs, "broken.mo"), "wb") as f:
                f.write(b"not a catalog at all")
            pairs, counts = bc.gettext_pairs(root, ["ru"])
            self.assertEqual(pairs, [("File", "Файл")])
            self.assertEqual(counts, {"old": 1, "unreadable:broken": 0})

    def test_multi_line_messages_pair_line_by_line_or_not_at_all(self):
        self.assertEqual(bc.message_lines("One\n\nTwo\n", "Eins\nZwei"),
                         [("One", "Eins"), ("Two", "Zwei")])
        self.assertEqual(bc.message_lines("One\nTwo", "Eins und zwei"), [])

    def test_locales_and_reserved_names(self):
        self.assertEqual(bc.gettext_locales("pt", "pt-br"), ["pt_BR", "pt"])
        self.assertEqual(bc.gettext_locales("de", "de"), ["de"])
        for reserved in ("gimp20", "evolution-data-server", "gnome-control-center-2.0", "Thunar",
                         "vlc", "gnucash", "atril", "pluma", "caja", "nemo",
                         "cinnamon-control-center"):
            self.assertTrue(bc.is_reserved(reserved), reserved)
        self.assertFalse(any(bc.is_reserved(p) for p in bc.GETTEXT_PACKAGES))
        with self.assertRaises(SystemExit):
            bc.check_gettext_packages(["apt", "inkscape"])


# A templates file as po2debconf leaves it in a package's control area (two templates, German,
# Brazilian and European Portuguese, an escaped comma in the choices, a verbatim list line).
TEMPLATES = """Template: demo/restart
Type: boolean
Default: true
Description: Restart services during package upgrades without asking?
 There are services installed on your system which need to be restarted when
 certain libraries are upgraded. Since these restarts may cause interruptions
 of service, you will normally be prompted on each upgrade.
 .
 Services to restart:
   ssh, cron
Description-de.UTF-8: Dienste bei Paket-Upgrades ohne Nachfrage neu starten?
 Auf Ihrem System sind Dienste installiert, die beim Upgrade bestimmter
 Bibliotheken neu gestartet werden müssen. Da diese Neustarts zu Unterbrechungen
 führen können, werden Sie normalerweise bei jedem Upgrade gefragt.
 .
 Neu zu startende Dienste:
   ssh, cron
Description-pt.UTF-8: Reiniciar serviços (pt)?
Description-pt_BR.UTF-8: Reiniciar serviços durante atualizações de pacotes sem perguntar?

Template: demo/mode
Type: select
Choices: local only, internet site, mail sent by smarthost\, no local mail, Campo_Grande
Choices-de.UTF-8: nur lokal, Internet-Site, Versand über Sendezentrale\, keine lokale E-Mail, Campo Grande
Choices-ru.UTF-8: только локально, интернет-сайт
Description: General type of mail configuration:
Description-de.UTF-8: Allgemeine Art der E-Mail-Konfiguration:
 Ein zweiter Absatz, den das Englische nicht hat.
"""


class DebconfTemplates(unittest.TestCase):
    def test_stanzas_fields_and_continuations(self):
        stanzas = dct.parse_templates(TEMPLATES)
        self.assertEqual([s["Template"] for s in stanzas], ["demo/restart", "demo/mode"])
        short, paragraphs = dct.description_parts(stanzas[0]["Description"])
        self.assertEqual(short, "Restart services during package upgrades without asking?")
        self.assertEqual(len(paragraphs), 3)  # prose, "Services to restart:", the verbatim list
        self.assertTrue(paragraphs[0].startswith("There are services installed on your system "
                                                 "which need to be restarted when certain"))
        self.assertEqual(paragraphs[2], "ssh, cron")
        self.assertEqual(dct.split_choices(stanzas[1]["Choices"]),
                         ["local only", "internet site", "mail sent by smarthost, no local mail",
                          "Campo_Grande"])

    def test_pairs_line_up_or_are_left_out(self):
        stanzas = dct.parse_templates(TEMPLATES)
        pairs = dct.template_pairs(stanzas, ["de"], bc.align_sentences)
        self.assertIn(("Restart services during package upgrades without asking?",
                       "Dienste bei Paket-Upgrades ohne Nachfrage neu starten?"), pairs)
        # The extended description sentence by sentence (both sides have two).
        self.assertIn(("Since these restarts may cause interruptions of service, you will normally "
                       "be prompted on each upgrade.", "Da diese Neustarts zu Unterbrechungen führen "
                       "können, werden Sie normalerweise bei jedem Upgrade gefragt."), pairs)
        self.assertIn(("Services to restart:", "Neu zu startende Dienste:"), pairs)
        self.assertIn(("mail sent by smarthost, no local mail",
                       "Versand über Sendezentrale, keine lokale E-Mail"), pairs)
        # demo/mode's German description has a paragraph the English lacks: only its short line.
        self.assertIn(("General type of mail configuration:",
                       "Allgemeine Art der E-Mail-Konfiguration:"), pairs)
        self.assertFalse(any(xx.startswith("Ein zweiter Absatz") for _, xx in pairs))
        # An identifier among the choices is not text to translate.
        self.assertNotIn(("Campo_Grande", "Campo Grande"), pairs)
        self.assertEqual(len(pairs), 2 + 3 + 3 + 1)
        # Russian lists two choices for four: left out; no Russian description.
        self.assertEqual(dct.template_pairs(stanzas, ["ru"], bc.align_sentences), [])
        # pt_BR before pt, as for the gettext catalogs.
        self.assertEqual(dct.template_pairs(stanzas, bc.gettext_locales("pt", "pt-br"),
                                            bc.align_sentences)[0][1],
                         "Reiniciar serviços durante atualizações de pacotes sem perguntar?")

    def test_read_from_a_directory_of_templates_files(self):
        with tempfile.TemporaryDirectory() as root:
            with open(os.path.join(root, "demo.templates"), "w", encoding="utf-8") as f:
                f.write(TEMPLATES)
            with open(os.path.join(root, "untranslated.templates"), "w", encoding="utf-8") as f:
                f.write("Template: x/y\nType: note\nDescription: Only English\n")
            pairs, counts = bc.debconf_pairs(root, ["de"])
            self.assertEqual(counts, {"demo": 9})
            self.assertEqual(len(pairs), 9)

    def test_malformed_input_is_skipped_not_fatal(self):
        stanzas = dct.parse_templates(" stray continuation\nno colon here\nDescription: x\n"
                                      "Description-de.UTF-8: y\n")
        self.assertEqual(stanzas, [{"Description": "x", "Description-de.UTF-8": "y"}])
        self.assertEqual(dct.parse_templates(""), [])


class GeneralDevSet(unittest.TestCase):
    def test_held_out_sentences_never_in_training_text(self):
        splits = {"de": {"train": [("Open the file", "Datei öffnen")], "dev": [], "test": []},
                  "fr": {"train": [("Save as...", "Enregistrer sous...")], "dev": [], "test": []}}
        held_out = {"de": [("Open the file.", "Die Datei öffnen."),      # near-duplicate of train
                           ("Save as", "Speichern unter"),              # of French train text
                           ("Burn the disc", "Die CD brennen"),
                           ("Cannot open image.", "Bild kann nicht geöffnet werden.")],
                    "fr": [("Burn the disc", "Graver le disque")]}
        general = bc.general_split(held_out, splits, size=5, seed=1)
        self.assertEqual(sorted(general["de"]), [("Burn the disc", "Die CD brennen"),
                                                 ("Cannot open image.",
                                                  "Bild kann nicht geöffnet werden.")])
        self.assertEqual(general["fr"], [("Burn the disc", "Graver le disque")])
        # At most `size`, the same ones for a seed.
        one = bc.general_split(held_out, splits, size=1, seed=7)["de"]
        self.assertEqual(len(one), 1)
        self.assertEqual(one, bc.general_split(held_out, splits, size=1, seed=7)["de"])

    def test_held_out_packages_are_neither_trained_on_nor_reserved(self):
        self.assertFalse(set(bc.GENERAL_GETTEXT_PACKAGES) & set(bc.GETTEXT_PACKAGES))
        self.assertFalse(any(bc.is_reserved(p) for p in bc.GENERAL_GETTEXT_PACKAGES))


def synthetic_pairs(lang, count, skip_every=0):
    """English sentences 'word i of the corpus' with a fake translation; some missing."""
    return [(f"sentence number {i} of the corpus", f"{lang} satz {i}") for i in range(count)
            if not (skip_every and i % skip_every == 0)] + [("Ok", f"{lang}-ok")]


class Split(unittest.TestCase):
    def setUp(self):
        self.pairs = {"de": synthetic_pairs("de", 300), "fr": synthetic_pairs("fr", 300, skip_every=7)}
        # A near-duplicate of sentence 5 in German only: must follow sentence 5's split.
        self.pairs["de"].append(("Sentence number 5 of the corpus...", "de satz 5 ..."))
        self.splits = bc.assign_splits(self.pairs, dev_size=20, test_size=30, seed=3)

    def test_sizes_and_eval_sentences_shared_by_languages(self):
        for lang in ("de", "fr"):
            self.assertEqual(len(self.splits[lang]["dev"]), 20)
            self.assertEqual(len(self.splits[lang]["test"]), 30)
        for split in ("dev", "test"):
            self.assertEqual([en for en, _ in self.splits["de"][split]], [en for en, _ in self.splits["fr"][split]])
        # "Ok" has fewer than 3 words: never an evaluation sentence.
        self.assertIn(("Ok", "de-ok"), self.splits["de"]["train"])

    def test_no_overlap_between_splits(self):
        for lang, by_split in self.splits.items():
            keys = {split: {bc.group_key(en) for en, _ in pairs} for split, pairs in by_split.items()}
            targets = {split: {xx for _, xx in pairs} for split, pairs in by_split.items()}
            for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
                self.assertFalse(keys[a] & keys[b], f"{lang}: {a}/{b} share English sentences")
                self.assertFalse(targets[a] & targets[b], f"{lang}: {a}/{b} share {lang} sentences")
        # Every kept pair is in exactly one split; only near-duplicates of eval sentences are left out.
        all_kept = [p for pairs in self.splits["fr"].values() for p in pairs]
        self.assertEqual(sorted(all_kept), sorted(self.pairs["fr"]))

    def test_deterministic_for_a_seed(self):
        again = bc.assign_splits(self.pairs, dev_size=20, test_size=30, seed=3)
        self.assertEqual(again, self.splits)
        other = bc.assign_splits(self.pairs, dev_size=20, test_size=30, seed=4)
        self.assertNotEqual(other["de"]["test"], self.splits["de"]["test"])

    def test_broader_text_only_adds_training_pairs(self):
        test_en, test_de = self.splits["de"]["test"][0]
        broader = {lang: list(pairs) for lang, pairs in self.pairs.items()}
        broader["de"] += [("Save the file", "Datei speichern"),        # new: train
                          (test_en.upper() + "!", "ganz anders"),       # English near-duplicate of test
                          ("Something else entirely", test_de + ".")]   # translation near-duplicate
        broader["fr"] += [("Save the file", "Enregistrer le fichier")]
        result = bc.add_broader_train(self.splits, broader, seed=3)
        for lang in ("de", "fr"):
            for split in ("dev", "test"):   # the default corpus' evaluation sets, unchanged
                self.assertEqual(result[lang][split], self.splits[lang][split])
            self.assertTrue(set(self.splits[lang]["train"]) < set(result[lang]["train"]))
        self.assertIn(("Save the file", "Datei speichern"), result["de"]["train"])
        self.assertNotIn((test_en.upper() + "!", "ganz anders"), result["de"]["train"])
        self.assertNotIn(("Something else entirely", test_de + "."), result["de"]["train"])
        self.assertEqual(bc.add_broader_train(self.splits, broader, seed=3), result)

    def test_written_layout(self):
        with tempfile.TemporaryDirectory() as out:
            counts = bc.write_corpus(out, self.splits)
            self.assertEqual(sorted(counts), ["de-en", "en-de", "en-fr", "fr-en"])
            self.assertEqual(counts["en-fr"], {"train": len(self.splits["fr"]["train"]), "dev": 20, "test": 30})

            def read(name):
                with open(os.path.join(out, name), encoding="utf-8") as f:
                    return f.read().splitlines()
            self.assertEqual(read("test.en-de.en"), [en for en, _ in self.splits["de"]["test"]])
            self.assertEqual(read("test.en-de.de"), [xx for _, xx in self.splits["de"]["test"]])
            # Both directions hold the same pairs.
            self.assertEqual(read("train.de-en.de"), read("train.en-de.de"))
            self.assertEqual(read("train.de-en.en"), read("train.en-de.en"))
            open(os.path.join(out, "train.en-xx.en"), "w").close()
            bc.remove_stale_files(out, list(counts))
            self.assertFalse(os.path.exists(os.path.join(out, "train.en-xx.en")))


if __name__ == "__main__":
    unittest.main()
