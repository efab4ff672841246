"""Reads the translated debconf templates of Debian packages as parallel text (build_corpus.py
--debconf).

A package that asks questions at install time ships them as debconf templates in its control
area (DEBIAN/templates, `dpkg-deb -e`). The file is RFC 822-like (debconf-devel(7)): stanzas
separated by blank lines, one field per line, continuation lines starting with a space. Each
template's English text is in `Description` (a short line, then an extended text whose
paragraphs are separated by " ." lines) and, for select questions, `Choices` (a comma-separated
list; "\\," is a literal comma). po2debconf merges the translators' work into the same stanza
as `Description-LL.UTF-8`, `Description-LL_CC.UTF-8`, `Choices-LL.UTF-8`.

These translations come from the debconf localisation work (debian/po/*.po of each package),
not from the package-description translations (DDTP) that the private evaluation uses.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence, Tuple

Pair = Tuple[str, str]

_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9_.-]*):(.*)$")
_UNESCAPED_COMMA = re.compile(r"(?<!\\),")
# A choice that is one identifier or path ("America/Campo_Grande", "Campo_Grande"): tzdata and
# others list them with translations that spell them out ("Campo Grande"), which would teach
# a model to rewrite identifiers.
_IDENTIFIER = re.compile(r"^\S*[_/]\S*$")


def parse_templates(text: str) -> List[Dict[str, str]]:
    """The stanzas of a templates file, field name -> value; a value's continuation lines
    follow its first line after a newline, their one leading space removed."""
    stanzas: List[Dict[str, str]] = []
    current: Dict[str, str] = {}
    field: Optional[str] = None
    for line in text.split("\n"):
        if not line.strip():
            if current:
                stanzas.append(current)
            current, field = {}, None
            continue
        if line[0] in " \t":
            if field is not None:
                current[field] += "\n" + line[1:]
            continue  # a continuation without a field: malformed, ignored
        match = _FIELD.match(line)
        if match is None:
            field = None
            continue
        field = match.group(1)
        current[field] = match.group(2).strip()
    if current:
        stanzas.append(current)
    return stanzas


def description_parts(value: str) -> Tuple[str, List[str]]:
    """A Description's short line and its extended text's paragraphs, each on one line.

    Lines of an extended description are word-wrapped prose; " ." (here ".") separates
    paragraphs. Verbatim lines (a second leading space: lists, commands) end a paragraph too,
    so a list never merges into the sentence before it."""
    short, _, extended = value.partition("\n")
    paragraphs: List[str] = []
    current: List[str] = []

    def flush():
        if current:
            paragraphs.append(" ".join(current))
            current.clear()

    for line in extended.split("\n") if extended else []:
        if line.strip() == ".":
            flush()
        elif line.startswith(" "):
            flush()
            paragraphs.append(line.strip())
        else:
            current.append(line.strip())
    flush()
    return short.strip(), [p for p in paragraphs if p]


def split_choices(value: str) -> List[str]:
    """A Choices value's items ("a, b\\, c" -> ["a", "b, c"])."""
    return [item.strip().replace("\\,", ",") for item in _UNESCAPED_COMMA.split(value)]


def translated_field(stanza: Dict[str, str], field: str, locales: Sequence[str]) -> Optional[str]:
    """The translation of `field` for the first of `locales` the stanza has (pt_BR before pt);
    only UTF-8 translations (the form po2debconf writes), so no charset is guessed."""
    for locale in locales:
        value = stanza.get(f"{field}-{locale}.UTF-8")
        if value is not None:
            return value
    return None


def template_pairs(stanzas: Sequence[Dict[str, str]], locales: Sequence[str],
                   align) -> List[Pair]:
    """(English, translation) pairs of the templates translated for one of `locales`: the
    short descriptions; the extended descriptions paragraph by paragraph when both sides have
    as many (then sentence by sentence through `align`, build_corpus.align_sentences); the
    choices item by item when both sides list as many (identifiers and paths among them left
    out). Anything that does not line up is left out rather than risk a misaligned pair."""
    pairs: List[Pair] = []
    for stanza in stanzas:
        english = stanza.get("Description")
        translation = translated_field(stanza, "Description", locales)
        if english is not None and translation is not None:
            en_short, en_paragraphs = description_parts(english)
            xx_short, xx_paragraphs = description_parts(translation)
            if en_short and xx_short:
                pairs.append((en_short, xx_short))
            if len(en_paragraphs) == len(xx_paragraphs):
                for en_text, xx_text in zip(en_paragraphs, xx_paragraphs):
                    pairs.extend(align(en_text, xx_text))
        choices = stanza.get("Choices")
        translated_choices = translated_field(stanza, "Choices", locales)
        if choices is not None and translated_choices is not None:
            en_items, xx_items = split_choices(choices), split_choices(translated_choices)
            if len(en_items) == len(xx_items):
                pairs.extend((en, xx) for en, xx in zip(en_items, xx_items)
                             if en and xx and not _IDENTIFIER.match(en))
    return pairs
