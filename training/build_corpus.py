"""Builds the multilingual parallel corpus (English <-> 8 languages) from Debian packages.

    /usr/bin/python3 training/build_corpus.py [--out build/corpus] [--languages de,fr,...]
        [--dev-size 500] [--test-size 500] [--seed 1] [--jobs 2] [--show-samples 10] [--gettext]
        [--debconf [--debconf-max-bytes 1000000]]

One command, no hand steps; a second run reuses the downloaded packages.

Sources (real human translations, all from Debian's archive via `apt-get download`):
  * LibreOffice UI catalogs, `libreoffice-l10n-XX`: the compiled gettext catalogs
    usr/lib/libreoffice/program/resource/XX/LC_MESSAGES/*.mo give (English msgid, XX msgstr)
    pairs. The .mo format is read directly (see `read_mo`), no msgunfmt needed.
  * LibreOffice help, `libreoffice-help-XX` and `libreoffice-help-en-us`: the same help pages,
    generated from the same sources, in every language; each paragraph and heading carries a
    stable id (`par_id3150457`, `hd_id...`), so paragraph i of a page in English and in XX
    are translations of each other. Paragraphs are split into sentences where both sides
    split into the same number of sentences.
  * With --gettext, also the gettext catalogs other packages install under
    usr/share/locale/LL/LC_MESSAGES (GETTEXT_PACKAGES: GTK, GLib, GNOME Shell, apt, dpkg,
    debconf, GNU utilities, iso-codes' country and language names, GNOME, Xfce and KDE
    applications, ...), one pair per message,
    multi-line messages line by line; cleaned as UI strings. Never the reserved sources
    (RESERVED_CATALOGS, and no DDTP package descriptions): they feed a private evaluation.
  * With --debconf, also the translated debconf templates (the questions packages ask at
    install time, debconf_templates.py) of every Debian package that depends on debconf and
    whose .deb is at most --debconf-max-bytes: short descriptions, extended descriptions
    paragraph by paragraph then sentence by sentence, choices item by item; cleaned as prose.
    These come from the debconf translation work (debian/po), not from DDTP.
Packages are cached in `--deb-cache` (default OUT/debs) and unpacked with `dpkg -x` into a
temporary directory that is removed afterwards. Language codes map to package suffixes with
`code=suffix` (default `pt=pt-br`: Brazilian Portuguese is the more complete pack).

Cleaning (per pair; `clean_pair` says why a pair is dropped, counts.json adds the reasons up):
  * markup: XML/HTML-like tags (`<b>`, `<ahelp hid=...>`, `<font size=2>`) are removed and
    HTML entities unescaped;
  * accelerators (UI strings only; help text has none): every `~` (LibreOffice's marker),
    a single `_` before a letter or digit (GTK mnemonic), `&` starting a word;
  * product variables are expanded to what LibreOffice shows (`%PRODUCTNAME`,
    `$[officename]` -> LibreOffice, `%PRODUCTVERSION` -> 7.4); other placeholders
    (`%1`, `$(ARG1)`, `%s`, `$name`, `%FILENAME`, ...) are kept verbatim, and a pair whose
    source and target do not have the same multiset of placeholders is dropped (a translation
    that loses or invents a placeholder is not a faithful one);
  * text is NFKC-normalized (as SentencePiece's default normalizer does to model input, so
    references hold only what a model can output: "..." for U+2026, plain spaces);
  * whitespace is collapsed; pairs with an empty side, a side without letters, a target
    identical to the source (untranslated), a side over --max-chars (200) characters, or a
    length ratio over --max-ratio (3x, in characters; pairs with both sides under 12 characters
    are exempt because short labels vary a lot) are dropped;
  * dedupe: one translation per English sentence (the most frequent) and one English sentence
    per translation, so both directions have unique sources.

Split (deterministic for a --seed): dev and test are multi-way parallel: the same English
sentences for every language (in the same order), drawn from sentences with at least
--min-eval-words words that survive cleaning in all languages. An English sentence, and its
near-duplicates (same letters and digits ignoring case, punctuation and spaces, e.g. "Insert"
and "Insert..."), is in one split only, for every language, and en->XX and XX->en use the same
sentences; so no split sees another's sentences, in either direction or through another
language. Dev and test are always drawn from the LibreOffice pairs alone: with --gettext or
--debconf they are the default corpus' dev and test, sentence for sentence, and the broader
text only adds training pairs (none whose English or translation is a near-duplicate of a dev
or test sentence), so scores stay comparable across the two corpora.

Output layout (OUT, default build/corpus), as data.py reads it:
  {split}.{src}-{tgt}.{lang}   line-aligned UTF-8 text, split in train/dev/test, for every task
                               en-XX and XX-en (XX-en holds the same pairs as en-XX), e.g.
                               train.en-de.en + train.en-de.de, test.de-en.de + test.de-en.en
  counts.json                  pairs per task and split, per-language extraction and drop
                               counts, package versions and the settings used
  debs/                        the downloaded .deb files (cache)
Train files are shuffled (seeded), so their first N lines are a random sample.
"""

from __future__ import annotations

import argparse
import collections
import glob
import html
import html.parser
import json
import multiprocessing
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import unicodedata
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from debconf_templates import parse_templates, template_pairs

DEFAULT_LANGUAGES = "de,fr,es,it,pt=pt-br,nl,pl,ru"
PIVOT = "en"
SPLITS = ("train", "dev", "test")

Pair = Tuple[str, str]   # (English, other language)

UI_RESOURCE_DIR = "usr/lib/libreoffice/program/resource/*/LC_MESSAGES"
GETTEXT_LOCALE_DIR = "usr/share/locale"

# --gettext: the gettext catalogs these Debian packages install under usr/share/locale (UI
# strings and messages of desktop libraries, the GNOME shell, package tools, GNU utilities,
# country and language names, GNOME, Xfce and KDE applications), beside LibreOffice's. Off by
# default, so the corpus the demo
# model was trained on stays reproducible.
GETTEXT_PACKAGES = (
    # Base system and libraries.
    "apt", "bash", "coreutils", "debconf-i18n", "diffutils", "dpkg", "e2fsprogs-l10n",
    "findutils", "gettext", "gnome-shell-common", "grep", "iso-codes", "libglib2.0-data",
    "libgtk-3-common", "sed", "tar", "util-linux-locales", "wget",
    # GNOME applications (not the reserved ones: no gedit, evince, nautilus,
    # gnome-control-center).
    "baobab", "cheese-common", "eog", "file-roller", "gnome-calculator", "gnome-calendar",
    "gnome-characters", "gnome-clocks", "gnome-contacts", "gnome-disk-utility",
    "gnome-font-viewer", "gnome-logs", "gnome-maps", "gnome-online-accounts",
    "gnome-session-common", "gnome-settings-daemon-common", "gnome-shell-extensions",
    "gnome-software-common", "gnome-sound-recorder", "gnome-system-monitor",
    "gnome-terminal-data", "gnome-text-editor", "gnome-weather", "network-manager-gnome",
    "rhythmbox-data", "seahorse", "simple-scan", "totem-common", "yelp",
    # Xfce (not thunar).
    "mousepad", "orage", "parole", "ristretto", "xfce4-panel", "xfce4-power-manager-data",
    "xfce4-session", "xfce4-settings", "xfce4-terminal", "xfdesktop4-data", "xfwm4",
    # KDE (packages of at most 5 MB).
    "ark", "dolphin", "kate", "kcalc", "kde-cli-tools", "kio", "konsole", "systemsettings",
    # Other desktop programs and tools.
    "blueman", "brasero-common", "claws-mail-i18n", "geany-common", "gparted", "gthumb-data",
    "hexchat-common", "lightdm-gtk-greeter", "network-manager", "pavucontrol", "pidgin-data",
    "shotwell-common", "software-properties-common", "synaptic", "transmission-common",
)
# Held out of training, for the general dev set (general.{task}.{lang}): with --gettext, these
# programs' catalogs (none in GETTEXT_PACKAGES, none reserved or a fork of a reserved one), and
# with --debconf every DEBCONF_GENERAL_EVERY-th package that has templates; their English
# sentences, and near-duplicates, are in no other split. Text from programs and packages the
# model never saw, as the private evaluation's is.
GENERAL_GETTEXT_PACKAGES = (
    "catfish", "deja-dup", "galculator", "gigolo", "gnome-boxes", "gnome-chess", "gnome-mines",
    "gnome-music", "gnome-nettool", "gnome-tweaks", "kmines", "lollypop", "meld",
    "xfburn", "xfce4-notifyd", "xfce4-screenshooter", "xfce4-taskmanager",
)
DEBCONF_GENERAL_EVERY = 10
# Reserved for a private evaluation and never read: Debian's package-description translations
# (DDTP, no source here reads them) and the catalogs of these programs. A package or catalog
# (.mo domain) whose name starts with one of them is refused or skipped.
RESERVED_CATALOGS = (
    "audacity", "evince", "evolution", "filezilla", "gedit", "gimp", "gnome-control-center",
    "gnucash", "gnumeric", "inkscape", "nautilus", "thunar", "vlc",
)
# --debconf: packages whose .deb is larger are skipped (their templates are no richer).
DEBCONF_MAX_DEB_BYTES = 1_000_000
# Forks of reserved programs, whose catalogs largely hold the reserved ones' translations
# (MATE's atril of evince, pluma of gedit, caja of nautilus; Cinnamon's nemo of nautilus; the
# control centers forked from gnome-control-center): never read either, so the private
# evaluation's text cannot reach training through them.
RESERVED_FORKS = (
    "atril", "budgie-control-center", "caja", "cinnamon-control-center", "mate-control-center",
    "nemo", "pluma", "xed", "xreader",
)
HELP_DIR = "usr/share/libreoffice/help/*"
PRODUCT_NAME = "LibreOffice"
PRODUCT_VERSION = "7.4"


# --------------------------------------------------------------------------------------------
# Packages
# --------------------------------------------------------------------------------------------

def parse_languages(spec: str) -> Dict[str, str]:
    """'de,pt=pt-br' -> {'de': 'de', 'pt': 'pt-br'}: corpus code -> Debian package suffix."""
    languages = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        code, _, suffix = item.partition("=")
        if not re.fullmatch(r"[a-z]{2,3}", code) or code == PIVOT:
            # data.py parses file names with [A-Za-z_]; a '-' in a code would break task ids.
            raise SystemExit(f"bad language code {code!r} (two or three lowercase letters, not {PIVOT})")
        languages[code] = suffix or code
    return languages


def is_reserved(name: str) -> bool:
    """Whether a package or catalog belongs to the private evaluation (RESERVED_CATALOGS), or
    to a fork of a reserved program (RESERVED_FORKS)."""
    name = name.lower()
    return any(name.startswith(reserved) for reserved in RESERVED_CATALOGS + RESERVED_FORKS)


def check_gettext_packages(packages: Sequence[str]) -> None:
    reserved = [p for p in packages if is_reserved(p)]
    if reserved:
        raise SystemExit(f"reserved for the private evaluation, never read: {', '.join(reserved)}")


def gettext_locales(code: str, suffix: str) -> List[str]:
    """Locale directory names to try for a language, most specific first: package suffix
    'pt-br' is locale 'pt_BR', then the plain code."""
    base, _, country = suffix.partition("-")
    candidates = [f"{base}_{country.upper()}"] if country else []
    return candidates + [code]


def packages_for(suffix: str) -> Dict[str, str]:
    return {"ui": f"libreoffice-l10n-{suffix}", "help": f"libreoffice-help-{suffix}"}


def cached_deb(cache_dir: str, package: str) -> Optional[str]:
    found = sorted(glob.glob(os.path.join(cache_dir, f"{package}_*.deb")))
    return found[-1] if found else None


def fetch_packages(packages: Sequence[str], cache_dir: str) -> Dict[str, str]:
    """Downloads the packages not yet in cache_dir (one apt-get call); returns name -> .deb."""
    os.makedirs(cache_dir, exist_ok=True)
    missing = [p for p in packages if cached_deb(cache_dir, p) is None]
    if missing:
        print(f"apt-get download {' '.join(missing)}", flush=True)
        result = subprocess.run(["apt-get", "download", *missing], cwd=cache_dir,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if result.returncode != 0:
            raise SystemExit(f"apt-get download failed:\n{result.stdout}")
    debs = {}
    for package in packages:
        path = cached_deb(cache_dir, package)
        if path is None:
            raise SystemExit(f"{package}: not downloaded")
        debs[package] = path
    return debs


def deb_version(deb: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", deb, "Version"], check=True,
                          stdout=subprocess.PIPE, text=True).stdout.strip()


def unpack(deb: str, dest: str) -> None:
    subprocess.run(["dpkg", "-x", deb, dest], check=True)


def debconf_packages(max_bytes: int) -> List[str]:
    """The packages of the archive that depend on debconf (so may ask questions) and whose .deb
    is at most max_bytes, reserved ones left out; sorted."""
    listing = subprocess.run(["apt-cache", "rdepends", "debconf"], check=True,
                             stdout=subprocess.PIPE, text=True).stdout.splitlines()
    names = sorted({line.strip().lstrip("|") for line in listing[2:] if line.strip()})
    shown = subprocess.run(["apt-cache", "show", "--no-all-versions", *names],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    sizes = {}
    for stanza in shown.split("\n\n"):
        fields = dict(re.findall(r"^(Package|Size): (\S+)$", stanza, re.MULTILINE))
        if "Package" in fields and "Size" in fields:
            sizes[fields["Package"]] = int(fields["Size"])
    return sorted(name for name, size in sizes.items()
                  if size <= max_bytes and not is_reserved(name))


def collect_templates(debs: Dict[str, str], dest: str) -> int:
    """Copies the debconf templates of each .deb (its control area's `templates`) to
    dest/PACKAGE.templates; returns how many packages have one."""
    found = 0
    for package, deb in sorted(debs.items()):
        with tempfile.TemporaryDirectory(prefix="corpus-control-") as control:
            subprocess.run(["dpkg-deb", "-e", deb, control], check=True)
            templates = os.path.join(control, "templates")
            if os.path.isfile(templates):
                shutil.copyfile(templates, os.path.join(dest, f"{package}.templates"))
                found += 1
    return found


def debconf_pairs(root: str, locales: Sequence[str]) -> Tuple[List[Pair], Dict[str, int]]:
    """(English, translation) pairs of every templates file under root for the first of
    `locales` each template has, and the raw count per package that has any."""
    pairs: List[Pair] = []
    counts: Dict[str, int] = {}
    for path in sorted(glob.glob(os.path.join(root, "*.templates"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            found = template_pairs(parse_templates(f.read()), locales, align_sentences)
        if found:
            counts[os.path.basename(path)[:-len(".templates")]] = len(found)
            pairs.extend(found)
    return pairs, counts


# --------------------------------------------------------------------------------------------
# Reading the translations
# --------------------------------------------------------------------------------------------

def read_mo(path: str) -> Iterator[Tuple[str, str, str]]:
    """Yields (msgctxt, msgid, msgstr) of a GNU .mo catalog, header and plurals handled.

    Format (GNU gettext manual, "The Format of MO Files"): magic 0x950412de in the file's byte
    order, revision, N, offset of the original-strings table, offset of the translations table;
    each table holds N (length, offset) pairs of uint32. A context is stored as
    "ctxt\\x04msgid"; plural forms as NUL-separated strings (we keep the singular).
    """
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    order = {0x950412DE: "<", 0xDE120495: ">"}.get(magic)
    if order is None:
        raise ValueError(f"{path}: not a .mo file")
    count, originals, translations = struct.unpack(order + "3I", data[8:20])
    entries = []
    for i in range(count):
        olen, ooff = struct.unpack_from(order + "2I", data, originals + 8 * i)
        tlen, toff = struct.unpack_from(order + "2I", data, translations + 8 * i)
        entries.append((data[ooff:ooff + olen], data[toff:toff + tlen]))
    # The header (the empty msgid) names the catalog's charset; a few old catalogs are not
    # UTF-8 (ISO-8859-x, KOI8-R).
    charset = "utf-8"
    for key, value in entries:
        if not key:
            match = re.search(rb"charset=([-\w.:]+)", value)
            if match and match.group(1).lower() not in (b"charset", b"utf-8"):
                charset = match.group(1).decode("ascii")
    for key_bytes, value in entries:
        if not key_bytes:
            continue   # the header entry
        context, _, msgid = key_bytes.decode(charset).rpartition("\x04")
        msgstr = value.decode(charset)
        yield context, msgid.split("\x00")[0], msgstr.split("\x00")[0]


def message_lines(msgid: str, msgstr: str) -> List[Pair]:
    """A catalog message as pairs of lines: multi-line messages (program help, tables) pair
    line by line when both sides have as many non-blank lines, else they are left out."""
    en_lines = [line for line in msgid.split("\n") if line.strip()]
    xx_lines = [line for line in msgstr.split("\n") if line.strip()]
    return list(zip(en_lines, xx_lines)) if len(en_lines) == len(xx_lines) else []


def gettext_pairs(root: str, locales: Sequence[str]) -> Tuple[List[Pair], Dict[str, int]]:
    """(English, translation) lines of every catalog installed for the first of `locales` that
    root holds, and the raw count per catalog; reserved catalogs are skipped (counted under
    'reserved:<name>')."""
    counts: Dict[str, int] = {}
    for locale in locales:
        paths = sorted(glob.glob(os.path.join(root, GETTEXT_LOCALE_DIR, locale, "LC_MESSAGES", "*.mo")))
        if not paths:
            continue
        pairs = []
        for path in paths:
            domain = os.path.basename(path)[:-len(".mo")]
            if is_reserved(domain):
                counts[f"reserved:{domain}"] = 0
                continue
            try:
                found = [line for _, msgid, msgstr in read_mo(path) if msgstr
                         for line in message_lines(msgid, msgstr)]
            except (ValueError, LookupError, struct.error):
                # Not a .mo file, an unknown charset, text that does not decode, a truncated
                # table (UnicodeDecodeError is a ValueError): the catalog is left out, counted.
                counts[f"unreadable:{domain}"] = 0
                continue
            counts[domain] = len(found)
            pairs.extend(found)
        return pairs, counts
    return [], counts


def ui_pairs(catalog_dir: str) -> List[Pair]:
    """(msgid, msgstr) of every translated message of the .mo catalogs in catalog_dir."""
    pairs = []
    for path in sorted(glob.glob(os.path.join(catalog_dir, "*.mo"))):
        pairs.extend((msgid, msgstr) for _, msgid, msgstr in read_mo(path) if msgstr)
    return pairs


class _HelpParagraphs(html.parser.HTMLParser):
    """Collects the text of every paragraph / heading that has an id, keyed by id#occurrence.

    The occurrence number keeps ids that repeat in one page apart (the same source paragraph
    can be used twice); both languages repeat them in the same order. Inline switches
    (`<span class="switchinline">` with hidden alternatives such as MAC "Command" vs default
    "Ctrl", or CALC vs WRITER wording) keep only the `default...` alternative, as the help
    viewer shows on Linux; otherwise both would run together ("CommandCtrl").
    """

    _BLOCKS = {"p", "h1", "h2", "h3", "h4", "h5", "h6"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.paragraphs: Dict[str, str] = {}
        self._seen = collections.Counter()
        self._open = None        # [tag, key, nesting, parts] of the paragraph being read
        self._skip = 0           # nesting depth inside a hidden non-default alternative

    def handle_starttag(self, tag, attrs):
        if self._open is None:
            ident = dict(attrs).get("id")
            if tag in self._BLOCKS and ident:
                self._seen[ident] += 1
                self._open = [tag, f"{ident}#{self._seen[ident]}", 1, []]
            return
        if self._skip:
            self._skip += tag == "span"
            return
        attributes = dict(attrs)
        if tag == "span" and "hidden" in attributes and not (attributes.get("id") or "").startswith("default"):
            self._skip = 1
        elif tag == self._open[0]:
            self._open[2] += 1
        elif tag == "br":
            self._open[3].append(" ")

    def handle_endtag(self, tag):
        if self._open is None:
            return
        if self._skip:
            self._skip -= tag == "span"
            return
        if tag == self._open[0]:
            self._open[2] -= 1
            if self._open[2] == 0:
                self.paragraphs[self._open[1]] = "".join(self._open[3])
                self._open = None

    def handle_data(self, data):
        if self._open is not None and not self._skip:
            self._open[3].append(data)


def help_paragraphs(path: str) -> Dict[str, str]:
    parser = _HelpParagraphs()
    with open(path, encoding="utf-8", errors="replace") as f:
        parser.feed(f.read())
    parser.close()
    return parser.paragraphs


def help_pages(help_root: str) -> Dict[str, Dict[str, str]]:
    """Relative page path -> paragraphs, for every page under help_root/text."""
    pages = {}
    for path in sorted(glob.glob(os.path.join(help_root, "text", "**", "*.html"), recursive=True)):
        pages[os.path.relpath(path, help_root)] = help_paragraphs(path)
    return pages


def help_pairs(english: Dict[str, Dict[str, str]], other: Dict[str, Dict[str, str]]) -> List[Pair]:
    """Aligns paragraphs by (page, id), then sentences inside paragraphs where possible."""
    pairs = []
    for page, en_paragraphs in english.items():
        xx_paragraphs = other.get(page, {})
        for key, en_text in en_paragraphs.items():
            xx_text = xx_paragraphs.get(key)
            if xx_text is not None:
                pairs.extend(align_sentences(en_text, xx_text))
    return pairs


_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")
_SENTENCE_OPENERS = "\"'«»„“‘([¿¡"


def split_sentences(text: str) -> List[str]:
    """Splits after . ! ? followed by whitespace and an upper-case letter or opening mark."""
    text = " ".join(text.split())
    sentences, start = [], 0
    for match in _SENTENCE_BREAK.finditer(text):
        following = text[match.end():match.end() + 1]
        if following and (following.isupper() or following in _SENTENCE_OPENERS):
            sentences.append(text[start:match.start()])
            start = match.end()
    sentences.append(text[start:])
    return [s for s in sentences if s]


def align_sentences(en_text: str, xx_text: str) -> List[Pair]:
    """Sentence pairs when both sides have the same number of sentences, else the paragraph.

    Translators keep sentence boundaries almost always; where they do not, the paragraph stays
    whole (and is usually dropped later as too long), rather than risking misaligned pairs.
    """
    en_sentences, xx_sentences = split_sentences(en_text), split_sentences(xx_text)
    if len(en_sentences) == len(xx_sentences) > 1:
        return list(zip(en_sentences, xx_sentences))
    return [(en_text, xx_text)]


# --------------------------------------------------------------------------------------------
# Cleaning
# --------------------------------------------------------------------------------------------

_TAG = re.compile(r"</?([A-Za-z][\w:.-]*)(?:\s[^<>]*)?/?>")
_BREAKING_TAGS = {"br", "p", "div", "li", "ul", "ol", "tr", "td", "th", "table", "h1", "h2", "h3", "h4", "h5", "h6"}
_PRODUCT_VARIABLES = [
    (re.compile(r"%?\bPRODUCTNAME\b|\$\[officename\]|%\{PRODUCTNAME\}"), PRODUCT_NAME),
    (re.compile(r"%PRODUCTVERSION\b|\$\[officeversion\]"), PRODUCT_VERSION),
]
# Placeholders of LibreOffice's catalogs: %1, %s, %FILENAME, %MOD1, $(ARG1), $1, $name, {0}.
_PLACEHOLDER = re.compile(r"%[A-Z][A-Z0-9_]*\b|%\d+|%[sdu]\b|\$\([A-Za-z0-9_]+\)|\$\d+|\$[A-Za-z_]\w*"
                          r"|\{\d+\}")
_MNEMONIC_UNDERSCORE = re.compile(r"_(?=[^\W_])")
_AMPERSAND_ACCELERATOR = re.compile(r"(?<![^\W_])&(?=[^\W\d_])")   # "&File", not "major&minor"
_LETTER = re.compile(r"[^\W\d_]")


def strip_markup(text: str) -> str:
    """Removes XML/HTML-like tags, then unescapes entities (so '&lt;x&gt;' stays as text).

    Inline tags vanish ("<b>dialog</b>." -> "dialog."); line and block tags become a space."""
    return html.unescape(_TAG.sub(lambda m: " " if m.group(1).lower() in _BREAKING_TAGS else "", text))


def strip_accelerators(text: str) -> str:
    """Removes UI mnemonic marks: '~' (LibreOffice), one '_' before a letter, '&' before a letter.

    Only a lone underscore is a mnemonic; several (FILE_NAME_X) are part of an identifier. An
    '&' counts only at the start of a word ("&File"): "major&minor" is text.
    """
    text = text.replace("~", "")
    if len(_MNEMONIC_UNDERSCORE.findall(text)) == 1 and text.count("_") == 1:
        text = _MNEMONIC_UNDERSCORE.sub("", text)
    return _AMPERSAND_ACCELERATOR.sub("", text)


def expand_product_variables(text: str) -> str:
    for pattern, value in _PRODUCT_VARIABLES:
        text = pattern.sub(value, text)
    return text


def placeholders(text: str) -> List[str]:
    return sorted(_PLACEHOLDER.findall(text))


def normalize_whitespace(text: str) -> str:
    return " ".join(text.split())


def clean_text(text: str, ui: bool) -> str:
    text = strip_markup(text)
    if ui:
        text = strip_accelerators(text)
    # NFKC, as SentencePiece's nmt_nfkc normalizer applies to model input: references then
    # hold only what a model can produce ("..." not U+2026, no non-breaking spaces).
    text = unicodedata.normalize("NFKC", expand_product_variables(text))
    return normalize_whitespace(text)


def length_ratio_ok(a: str, b: str, max_ratio: float, exempt_below: int = 12) -> bool:
    short, long = sorted((len(a), len(b)))
    return long < exempt_below or long <= max_ratio * short


def clean_pair(en: str, xx: str, ui: bool, max_chars: int = 200,
               max_ratio: float = 3.0) -> Tuple[Optional[Pair], str]:
    """Returns (cleaned pair, 'kept') or (None, reason it was dropped)."""
    en, xx = clean_text(en, ui), clean_text(xx, ui)
    if not en or not xx:
        return None, "empty"
    if not _LETTER.search(en) or not _LETTER.search(xx):
        return None, "no_letters"
    if en == xx:
        return None, "untranslated"
    if max(len(en), len(xx)) > max_chars:
        return None, "too_long"
    if not length_ratio_ok(en, xx, max_ratio):
        return None, "length_ratio"
    if placeholders(en) != placeholders(xx):
        return None, "placeholders"
    return (en, xx), "kept"


def dedupe(pairs: Sequence[Pair]) -> List[Pair]:
    """One-to-one pairs: the most frequent translation of each English sentence, then the most
    frequent English sentence of each translation (ties: sorted order, for determinism)."""
    counts = collections.Counter(pairs)
    ranked = sorted(counts, key=lambda pair: (-counts[pair], pair))
    by_english: Dict[str, str] = {}
    for en, xx in ranked:
        by_english.setdefault(en, xx)
    seen_targets, result = set(), []
    for en, xx in ranked:
        if by_english.get(en) == xx and xx not in seen_targets:
            seen_targets.add(xx)
            result.append((en, xx))
    return sorted(result)


# --------------------------------------------------------------------------------------------
# Split
# --------------------------------------------------------------------------------------------

def group_key(sentence: str) -> str:
    """Near-duplicate key: letters and digits only, lower case ('Insert...' ~ 'insert')."""
    return re.sub(r"[\W_]+", "", sentence.lower())


def assign_splits(pairs_by_lang: Dict[str, Sequence[Pair]], dev_size: int, test_size: int,
                  seed: int, min_eval_words: int = 3) -> Dict[str, Dict[str, List[Pair]]]:
    """lang -> split -> pairs. Dev/test English sentences are shared by all languages; no
    English near-duplicate group appears in two splits (variants of an evaluation sentence are
    left out of train)."""
    english_sets = [{en for en, _ in pairs} for pairs in pairs_by_lang.values()]
    common = sorted(set.intersection(*english_sets)) if english_sets else []
    candidates = [en for en in common if len(en.split()) >= min_eval_words]
    random.Random(seed).shuffle(candidates)
    evaluation: Dict[str, str] = {}       # English sentence -> split
    held_out_groups = set()
    for en in candidates:
        if len(evaluation) >= test_size + dev_size:
            break
        key = group_key(en)
        if key in held_out_groups:
            continue
        held_out_groups.add(key)
        evaluation[en] = "test" if len(evaluation) < test_size else "dev"
    order = {en: i for i, en in enumerate(evaluation)}

    result = {}
    for lang, pairs in pairs_by_lang.items():
        splits = {split: [] for split in SPLITS}
        for en, xx in pairs:
            if en in evaluation:
                splits[evaluation[en]].append((en, xx))
            elif group_key(en) not in held_out_groups:
                splits["train"].append((en, xx))
        for split in ("dev", "test"):
            splits[split].sort(key=lambda pair: order[pair[0]])   # same line order in all languages
        splits["train"].sort()
        random.Random(f"{seed}-{lang}").shuffle(splits["train"])
        result[lang] = splits
    return result


def add_broader_train(splits_by_lang: Dict[str, Dict[str, List[Pair]]],
                      pairs_by_lang: Dict[str, Sequence[Pair]], seed: int) -> Dict[str, Dict[str, List[Pair]]]:
    """The default corpus' dev and test (splits_by_lang, from LibreOffice alone) with a train
    split of every pair in pairs_by_lang (all sources) whose English sentence, or translation,
    is no near-duplicate of a dev or test sentence. Keeping dev and test fixed keeps scores on
    them comparable across corpora: a model trained on the broader text is measured on the
    same sentences as one trained on the default corpus, and neither has seen them."""
    held_out_english = {group_key(en) for by_split in splits_by_lang.values()
                        for split in ("dev", "test") for en, _ in by_split[split]}
    result = {}
    for lang, pairs in pairs_by_lang.items():
        held_out_other = {group_key(xx) for split in ("dev", "test")
                          for _, xx in splits_by_lang[lang][split]}
        train = sorted(pair for pair in pairs if group_key(pair[0]) not in held_out_english
                       and group_key(pair[1]) not in held_out_other)
        random.Random(f"{seed}-{lang}").shuffle(train)
        result[lang] = {"train": train, "dev": list(splits_by_lang[lang]["dev"]),
                        "test": list(splits_by_lang[lang]["test"])}
    return result


# --------------------------------------------------------------------------------------------
# Extraction of one language (runs in a worker process)
# --------------------------------------------------------------------------------------------

# The sources of the default corpus; dev and test come from these alone (see add_broader_train).
BASE_SOURCES = ("ui", "help")


def clean_pairs(raw: Dict[str, Sequence[Pair]], max_chars: int,
                max_ratio: float) -> Tuple[List[Pair], collections.Counter, collections.Counter]:
    """Cleans pairs by source ("ui", "help", "gettext", "debconf"; UI strings lose their
    accelerators); returns the kept pairs, the count per reason and the kept count per source."""
    reasons: collections.Counter = collections.Counter()
    kept_by_source: collections.Counter = collections.Counter()
    kept = []
    for origin, pairs in raw.items():
        for en, xx in pairs:
            pair, reason = clean_pair(en, xx, ui=origin in ("ui", "gettext"), max_chars=max_chars,
                                      max_ratio=max_ratio)
            reasons[reason] += 1
            if pair is not None:
                kept.append(pair)
                kept_by_source[origin] += 1
    return kept, reasons, kept_by_source


def extract_language(job) -> dict:
    """Unpacks one language's packages, aligns and cleans its pairs; returns pairs and stats."""
    lang, suffix, debs, english_help, max_chars, max_ratio, roots = job
    started = time.time()
    locales = gettext_locales(lang, suffix)
    raw = {"ui": [], "help": [], "gettext": [], "debconf": []}
    catalogs: Dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix=f"corpus-{lang}-") as root:
        for deb in debs:
            unpack(deb, root)
        raw["ui"] = ui_pairs(language_dir(root, UI_RESOURCE_DIR))
        other_help = help_pages(os.path.dirname(language_dir(root, HELP_DIR + "/text")))
        raw["help"] = help_pairs(english_help, other_help)
    if roots.get("gettext") is not None:
        raw["gettext"], catalogs = gettext_pairs(roots["gettext"], locales)
    templates: Dict[str, int] = {}
    if roots.get("debconf") is not None:
        raw["debconf"], templates = debconf_pairs(roots["debconf"], locales)
    # The general dev set's sources, cleaned the same way, kept apart.
    general_raw = {"gettext": [], "debconf": []}
    if roots.get("general_gettext") is not None:
        general_raw["gettext"] = gettext_pairs(roots["general_gettext"], locales)[0]
    if roots.get("general_debconf") is not None:
        general_raw["debconf"] = debconf_pairs(roots["general_debconf"], locales)[0]
    general, _, _ = clean_pairs(general_raw, max_chars, max_ratio)
    # The default corpus' sources (LibreOffice) apart: dev and test are always drawn from them.
    base_kept, reasons, kept_by_source = clean_pairs(
        {origin: raw[origin] for origin in BASE_SOURCES}, max_chars, max_ratio)
    more_kept, more_reasons, more_by_source = clean_pairs(
        {origin: pairs for origin, pairs in raw.items() if origin not in BASE_SOURCES},
        max_chars, max_ratio)
    reasons.update(more_reasons)
    kept_by_source.update(more_by_source)
    unique = dedupe(base_kept + more_kept)
    base = dedupe(base_kept)
    return {"lang": lang, "pairs": unique, "base_pairs": base, "raw_ui": len(raw["ui"]),
            "raw_help": len(raw["help"]),
            "raw_gettext": len(raw["gettext"]), "gettext_catalogs": catalogs,
            "raw_debconf": len(raw["debconf"]), "debconf_packages": templates,
            "clean_by_source": dict(kept_by_source), "general_pairs": dedupe(general),
            "reasons": dict(reasons), "unique": len(unique), "seconds": round(time.time() - started, 1)}


def language_dir(root: str, pattern: str) -> str:
    """The one language directory a package unpacked into root has (pt-br ships 'pt_BR' UI
    catalogs but 'pt-BR' help), found rather than guessed."""
    found = sorted(glob.glob(os.path.join(root, pattern)))
    if len(found) != 1:
        raise RuntimeError(f"{root}: expected one {pattern}, found {found}")
    return found[0]


_ENGLISH_HELP = None


def _set_english_help(pages):
    global _ENGLISH_HELP
    _ENGLISH_HELP = pages


def _extract_with_shared_english(job):
    lang, suffix, debs, max_chars, max_ratio, roots = job
    return extract_language((lang, suffix, debs, _ENGLISH_HELP, max_chars, max_ratio, roots))


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------

def write_lines(path: str, lines: Sequence[str]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line.replace("\n", " ") + "\n")
    os.replace(tmp, path)


def general_split(general_by_lang: Dict[str, Sequence[Pair]],
                  splits_by_lang: Dict[str, Dict[str, List[Pair]]], size: int,
                  seed: int) -> Dict[str, List[Pair]]:
    """Up to `size` pairs per language from the held-out sources whose English sentence (or a
    near-duplicate of it) is in no split of any language, chosen at random for `seed`."""
    seen = {group_key(en) for by_split in splits_by_lang.values()
            for pairs in by_split.values() for en, _ in pairs}
    chosen = {}
    for lang in sorted(general_by_lang):
        fresh, keys = [], set()
        for en, xx in general_by_lang[lang]:
            key = group_key(en)
            if key and key not in seen and key not in keys:
                keys.add(key)
                fresh.append((en, xx))
        random.Random(f"{seed}-general-{lang}").shuffle(fresh)
        chosen[lang] = fresh[:size]
        print(f"general {lang}: {len(chosen[lang])} of {len(fresh)} held-out pairs "
              f"({len(general_by_lang[lang]) - len(fresh)} also in training text)", flush=True)
    return chosen


def write_corpus(out: str, splits_by_lang: Dict[str, Dict[str, List[Pair]]]) -> Dict[str, Dict[str, int]]:
    """Writes both directions of every language; returns task -> split -> count."""
    counts = {}
    for lang in sorted(splits_by_lang):
        for split, pairs in splits_by_lang[lang].items():
            english = [en for en, _ in pairs]
            other = [xx for _, xx in pairs]
            for src, tgt in ((PIVOT, lang), (lang, PIVOT)):
                base = os.path.join(out, f"{split}.{src}-{tgt}")
                write_lines(f"{base}.{PIVOT}", english)
                write_lines(f"{base}.{lang}", other)
                counts.setdefault(f"{src}-{tgt}", {})[split] = len(pairs)
    return dict(sorted(counts.items()))


def remove_stale_files(out: str, tasks: Sequence[str]) -> None:
    """Drops corpus files of tasks no longer built (e.g. after changing --languages)."""
    pattern = re.compile(r"^(train|dev|test|general)\.([a-z]+-[a-z]+)\.[a-z]+$")
    for name in os.listdir(out):
        match = pattern.match(name)
        if match and match.group(2) not in tasks:
            os.remove(os.path.join(out, name))


def print_table(counts: Dict[str, Dict[str, int]]) -> None:
    general = any("general" in row for row in counts.values())
    extra = f" {'general':>8}" if general else ""
    print(f"{'task':<8} {'train':>8} {'dev':>6} {'test':>6}{extra}")
    for task, row in counts.items():
        extra = f" {row.get('general', 0):>8}" if general else ""
        print(f"{task:<8} {row['train']:>8} {row['dev']:>6} {row['test']:>6}{extra}")
    total = {split: sum(row.get(split, 0) for row in counts.values())
             for split in (*SPLITS, "general")}
    extra = f" {total['general']:>8}" if general else ""
    print(f"{'total':<8} {total['train']:>8} {total['dev']:>6} {total['test']:>6}{extra}",
          flush=True)


def print_samples(splits_by_lang, count: int, seed: int) -> None:
    rng = random.Random(seed)
    for lang in sorted(splits_by_lang):
        train = splits_by_lang[lang]["train"]
        print(f"--- {count} random train pairs, en-{lang}")
        for en, xx in rng.sample(train, min(count, len(train))):
            print(f"  en: {en}\n  {lang}: {xx}")


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="build/corpus")
    parser.add_argument("--deb-cache", default=None, help="default: OUT/debs")
    parser.add_argument("--languages", default=DEFAULT_LANGUAGES,
                        help="comma-separated codes, code=package-suffix where they differ")
    parser.add_argument("--dev-size", type=int, default=500)
    parser.add_argument("--test-size", type=int, default=500)
    parser.add_argument("--min-eval-words", type=int, default=3,
                        help="dev/test English sentences have at least this many words")
    parser.add_argument("--max-chars", type=int, default=200)
    parser.add_argument("--max-ratio", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--show-samples", type=int, default=0, help="print N random train pairs per language")
    parser.add_argument("--gettext", action="store_true",
                        help="also the gettext catalogs of GETTEXT_PACKAGES (off: the demo's corpus)")
    parser.add_argument("--debconf", action="store_true",
                        help="also the translated debconf templates of the packages that depend "
                             "on debconf (off: the demo's corpus)")
    parser.add_argument("--general-size", type=int, default=500,
                        help="with --gettext or --debconf: general dev pairs per language, from "
                             "sources held out of training")
    parser.add_argument("--debconf-max-bytes", type=int, default=DEBCONF_MAX_DEB_BYTES,
                        help="--debconf reads only packages whose .deb is at most this large")
    args = parser.parse_args(argv)
    check_gettext_packages(GETTEXT_PACKAGES)

    started = time.time()
    languages = parse_languages(args.languages)
    os.makedirs(args.out, exist_ok=True)
    cache = args.deb_cache or os.path.join(args.out, "debs")
    wanted = {"libreoffice-help-en-us"}
    for suffix in languages.values():
        wanted.update(packages_for(suffix).values())
    if args.gettext:
        wanted.update(GETTEXT_PACKAGES)
        wanted.update(GENERAL_GETTEXT_PACKAGES)
    templated: List[str] = []
    if args.debconf:
        templated = debconf_packages(args.debconf_max_bytes)
        print(f"debconf: {len(templated)} packages depend on debconf and are at most "
              f"{args.debconf_max_bytes} bytes", flush=True)
        wanted.update(templated)
    debs = fetch_packages(sorted(wanted), cache)
    download_bytes = sum(os.path.getsize(path) for path in debs.values())

    with tempfile.TemporaryDirectory(prefix="corpus-en-") as root, \
            tempfile.TemporaryDirectory(prefix="corpus-sources-") as sources:
        unpack(debs["libreoffice-help-en-us"], root)
        english_help = help_pages(os.path.dirname(language_dir(root, HELP_DIR + "/text")))
        print(f"English help: {len(english_help)} pages, "
              f"{sum(map(len, english_help.values()))} paragraphs", flush=True)
        # The gettext and debconf sources hold every language: unpacked once, read by every
        # worker; those of the general dev set apart.
        roots: Dict[str, Optional[str]] = {}
        if args.gettext:
            for name, packages in (("gettext", GETTEXT_PACKAGES),
                                   ("general_gettext", GENERAL_GETTEXT_PACKAGES)):
                roots[name] = os.path.join(sources, name)
                for package in packages:
                    unpack(debs[package], roots[name])

        if args.debconf:
            everything = os.path.join(sources, "all-templates")
            os.makedirs(everything)
            found = collect_templates({name: debs[name] for name in templated}, everything)
            with_templates = sorted(name[:-len(".templates")] for name in os.listdir(everything))
            held_out = set(with_templates[::DEBCONF_GENERAL_EVERY])
            for name, keep in (("debconf", lambda p: p not in held_out),
                               ("general_debconf", lambda p: p in held_out)):
                roots[name] = os.path.join(sources, name)
                os.makedirs(roots[name])
                for package in filter(keep, with_templates):
                    os.rename(os.path.join(everything, f"{package}.templates"),
                              os.path.join(roots[name], f"{package}.templates"))
            print(f"debconf: {found} of {len(templated)} packages have templates; "
                  f"{len(held_out)} held out for the general dev set", flush=True)
        jobs = [(lang, suffix, [debs[p] for p in packages_for(suffix).values()], args.max_chars,
                 args.max_ratio, roots)
                for lang, suffix in languages.items()]
        # fork: workers inherit the parsed English help instead of re-parsing or pickling it.
        with multiprocessing.get_context("fork").Pool(min(args.jobs, len(jobs)), _set_english_help,
                                                       (english_help,)) as pool:
            results = pool.map(_extract_with_shared_english, jobs)
    for r in results:
        print(f"{r['lang']}: ui {r['raw_ui']} + help {r['raw_help']} + gettext {r['raw_gettext']} + "
              f"debconf {r['raw_debconf']} raw pairs -> "
              f"{r['reasons'].get('kept', 0)} clean -> {r['unique']} unique  ({r['seconds']} s)  "
              f"dropped: { {k: v for k, v in sorted(r['reasons'].items()) if k != 'kept'} }", flush=True)
        print(f"    clean by source: {r['clean_by_source']}", flush=True)

    # Dev and test are drawn from the LibreOffice pairs alone, so that they are the default
    # corpus' with or without the broader sources.
    splits = assign_splits({r["lang"]: r["base_pairs"] for r in results}, args.dev_size,
                           args.test_size, args.seed, args.min_eval_words)
    if args.gettext or args.debconf:
        splits = add_broader_train(splits, {r["lang"]: r["pairs"] for r in results}, args.seed)
    for lang, by_split in splits.items():
        for split in ("dev", "test"):
            wanted_size = args.dev_size if split == "dev" else args.test_size
            if len(by_split[split]) < wanted_size:
                print(f"warning: {lang} {split} has {len(by_split[split])} < {wanted_size} pairs", file=sys.stderr)
    counts = write_corpus(args.out, splits)
    for stale in glob.glob(os.path.join(args.out, "general.*")):
        os.remove(stale)  # of an earlier run: never beside another corpus' training text
    if args.gettext or args.debconf:
        general = general_split({r["lang"]: r["general_pairs"] for r in results}, splits,
                                args.general_size, args.seed)
        for task, row in write_corpus(args.out, {lang: {"general": pairs}
                                                 for lang, pairs in general.items()}).items():
            counts[task].update(row)
    remove_stale_files(args.out, list(counts))

    summary = {
        "tasks": counts,
        "languages": {r["lang"]: {k: r[k] for k in ("raw_ui", "raw_help", "raw_gettext",
                                                    "gettext_catalogs", "raw_debconf",
                                                    "debconf_packages", "clean_by_source",
                                                    "reasons", "unique")}
                      for r in results},
        "packages": {name: {"file": os.path.basename(path), "version": deb_version(path),
                            "bytes": os.path.getsize(path)} for name, path in sorted(debs.items())},
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "deb_cache", "jobs", "show_samples")},
        "download_bytes": download_bytes,
        "seconds": round(time.time() - started, 1),
    }
    with open(os.path.join(args.out, "counts.json"), "w") as f:
        json.dump(summary, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print_table(counts)
    if args.show_samples:
        print_samples(splits, args.show_samples, args.seed)
    print(f"packages: {download_bytes / 1e6:.1f} MB in {cache}; built {args.out} in "
          f"{time.time() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
