"""A clinical tokenizer (English rules plus clinical ones) and gold-boundary splitting.

``spacy_softprompt.ClinicalTokenizer.v1`` builds a plain spaCy ``Tokenizer``
whose prefix/suffix/infix patterns, ``token_match`` and special cases are the
English defaults extended for clinical text, so everything serialises with the
pipeline (``tokenizer.to_disk``) and loads without this package's code:

* a number glued to a unit splits: ``25mg`` -> ``25 mg``, ``10mg/kg`` ->
  ``10 mg / kg``, ``5mmHg``, ``3x``; ``x3`` -> ``x 3``;
* ranges and operators: ``5-10``, ``5–10``, ``ratio=0.58``, ``BMI>40``, ``≥30``;
* punctuation glued to words: ``mL.``, ``vitamin D.``, ``ataxia.1`` (citation
  markers), ``risk[4``, ``agents(warfarin``, ``(COX)-deficient``,
  ``(ILD)/pneumonitis``, ``a;b``, ``ranitidine*``, ``HIV+``, ``chemo-``,
  ``-adrenergic``, CamelCase joins from flattened tables (``RashRash``);
* kept whole: frequencies ``q6h``, ``q4-6h``, ``q12hr`` and Latin abbreviations
  with periods (``b.i.d.``, ``p.o.``, ``p.r.n.``); emoticon special cases such
  as ``=3`` or ``(=`` are removed;
* the whitespace special cases that only keep ``"\\n"``, ``"\\t"`` or ``" "``
  whole are left out: they change no token, but they switch spaCy's chunk cache
  off for the rest of a note (about 9x the tokenizer's time on notes with line
  breaks).

:func:`split_at_boundaries` retokenizes a Doc so that given character offsets
fall on token boundaries (used to make gold entity edges alignable).
"""
import bisect
import re
from collections import defaultdict
from typing import Callable, Dict, Iterable, List

from spacy.lang.char_classes import ALPHA, ALPHA_LOWER, ALPHA_UPPER
from spacy.lang.en import English
from spacy.lang.tokenizer_exceptions import emoticons
from spacy.language import Language
from spacy.symbols import ORTH
from spacy.tokenizer import Tokenizer
from spacy.tokens import Doc
from spacy.util import compile_infix_regex, compile_prefix_regex, compile_suffix_regex, registry

MICRO = "µμ"  # micro sign and Greek mu

#: Units that split from a preceding number (case-sensitive).
CLINICAL_UNITS = [
    "mg", "mcg", "ug", "µg", "μg", "ng", "pg", "g", "kg",
    "mL", "ml", "µL", "μL", "uL", "mcL", "dL", "dl", "L",
    "mmol", "µmol", "μmol", "nmol", "pmol", "mol", "mEq", "meq", "mOsm",
    "IU", "iu", "U", "units", "unit", "kU", "mU", "MU",
    "mmHg", "cmH2O", "mm", "cm", "µm", "μm", "nm", "m",
    "h", "hr", "hrs", "hour", "hours", "min", "mins", "sec", "d", "wk", "wks", "mo", "mos", "yr", "yrs",
    "cc", "gtt", "gtts", "tab", "tabs", "cap", "caps", "puff", "puffs", "mV", "µV", "μV", "mA", "Hz",
    "kcal", "bpm", "x", "%",
    "day", "days", "week", "weeks", "month", "months", "year", "years", "times",
    "tablet", "tablets", "capsule", "capsules", "dose", "doses",
]

_UNITS = "|".join(sorted((re.escape(u) for u in CLINICAL_UNITS), key=len, reverse=True))
_OPS = r"(?:[<>]=?|=|[≤≥≈±])"
_HYPHENS = r"(?:-|–|—|--)"

CLINICAL_PREFIXES = [
    r"[<>]=",
    r"[≤≥≈±~×]",
    r"/(?=[{a}])".format(a=ALPHA),  # /NEUTROPENIA
    r"x(?=[0-9])",  # x3 -> x 3
    r"-+(?=[{a}])".format(a=ALPHA),  # bullets and cut compounds: -Currently, -adrenergic
]

CLINICAL_SUFFIXES = [
    r"(?<=[0-9])(?:{u})".format(u=_UNITS),
    r"(?<=[{a}0-9{m}\u2160-\u2188])\.".format(a=ALPHA, m=MICRO),  # mL. D. H2O. Ⅱ.
    r"(?<=[{a}])[*+]".format(a=ALPHA),  # ranitidine* HIV+
    r"(?<=[{a}]{{2}})[-/]".format(a=ALPHA_LOWER),  # chemo-, changes/
    r"(?<=[{a}0-9]){o}".format(a=ALPHA, o=_OPS),  # Creatinine<=
    r"(?<=[{a}]{{3}})[0-9]{{1,2}}".format(a=ALPHA_LOWER),  # citation markers: fibers4
]

CLINICAL_INFIXES = [
    r"(?<=[0-9])(?=(?:{u})(?![{a}]))".format(u=_UNITS, a=ALPHA),  # 10mg/kg -> 10 mg / kg
    r"(?<=[^\s<>=≤≥≈±]){o}(?=[^\s<>=≤≥≈±])".format(o=_OPS),  # ratio=0.58, AFI>25
    r"(?<=[0-9]){h}(?=[0-9])".format(h=_HYPHENS),  # ranges 5-10, 5–10
    r"(?<=[{a}0-9]){h}(?=[0-9])".format(a=ALPHA, h=r"(?:–|—)"),  # high—7443
    r"(?<=[{a}{m}])/(?=[0-9])".format(a=ALPHA, m=MICRO),  # μg/24
    r"(?<=[0-9])/(?=[{m}])".format(m=MICRO),  # 200/µL
    r"(?<=[)\]])(?:{h}|/)(?=[{a}0-9(])".format(a=ALPHA, h=_HYPHENS),  # (COX)-deficient, (ILD)/...
    r"(?<=[{a}0-9])[)\]](?=[-–—/<>=≤≥:;,{a}])".format(a=ALPHA),  # (ILD)/.., (BMI):20
    r"(?<=[)\]])[:;,](?=\S)",
    r"(?<=[{a}.])[\[(](?=[{a}0-9])".format(a=ALPHA),  # risk[4, agents(warfarin
    r"(?<=[{a}]{{2}})\.(?=[\[(0-9])".format(a=ALPHA),  # ataxia.1, lesions.[19, CEA.(Fig
    r"(?<=[{a}]{{2}})\.(?=[{a}]{{2}})".format(a=ALPHA_LOWER),  # normal.on
    r"(?<=[0-9)\]])\.(?=[{u}][{l}])".format(u=ALPHA_UPPER, l=ALPHA_LOWER),  # 10/10.The
    r"(?<=[{u}])\+(?=[{u}])".format(u=ALPHA_UPPER),  # BUCY+ATG
    r"(?<=\S);(?=\S)",  # drug lists a;b;c
    r"(?<=[{a}0-9])\*(?=\S)".format(a=ALPHA),  # hydrate*;x, Rash*1
    r"(?<=[0-9])×(?=[0-9])",
    r"(?<=[{l}]{{2}})(?=[{u}][{l}]{{2}})".format(l=ALPHA_LOWER, u=ALPHA_UPPER),  # RashRash
]

#: Kept as one token: q6h, q4-6h, q12hr, q.6.h.
CLINICAL_TOKEN_MATCH = r"^(?:[qQ]\.?[0-9]+(?:-[0-9]+)?\.?(?:h|hr|hrs|hrly|d|wk|min)?\.?)$"

#: Latin abbreviations kept as single tokens (lower case; capitalised forms added).
CLINICAL_ABBREVIATIONS = [
    "b.i.d.", "t.i.d.", "q.i.d.", "q.d.", "q.o.d.", "q.h.s.", "h.s.", "p.o.", "p.r.n.",
    "a.c.", "p.c.", "i.v.", "i.m.", "s.c.", "s.q.", "q.a.m.", "q.p.m.", "o.d.", "o.s.", "o.u.",
]


_SINGLE_LETTER_ABBR = re.compile(r"^[A-Za-z]\.$")  # 'l.' in 'mmol/l.' ends a sentence far more often


def _is_plain_whitespace_case(key: str, value: List[Dict[int, str]]) -> bool:
    """A special case that only keeps a whitespace chunk whole (``"\\n"``, ``"\\t"``, ``" "``).

    Whitespace chunks are never split by affixes, so without the case the
    tokenizer yields the very same token. With it, spaCy's tokenizer stops
    caching for the rest of the document after the first hit (the
    ``has_special`` flag is never reset, explosion/spaCy#13950): every note with
    a line break would re-run the affix regexes on each later word.
    """
    return key.isspace() and value == [{ORTH: key}]


def clinical_rules() -> Dict[str, List[Dict[int, str]]]:
    """English special cases without emoticons or plain whitespace cases, plus
    clinical abbreviations."""
    rules = {
        k: v
        for k, v in English.Defaults.tokenizer_exceptions.items()
        if k not in emoticons and not _SINGLE_LETTER_ABBR.match(k) and not _is_plain_whitespace_case(k, v)
    }
    for abbr in CLINICAL_ABBREVIATIONS:
        for form in (abbr, abbr.upper()):
            rules[form] = [{ORTH: form}]
    return rules


def build_clinical_tokenizer(nlp: Language) -> Tokenizer:
    """A ``Tokenizer`` over ``nlp.vocab`` with the clinical rules."""
    defaults = English.Defaults
    prefixes = CLINICAL_PREFIXES + list(defaults.prefixes)
    suffixes = CLINICAL_SUFFIXES + list(defaults.suffixes)
    infixes = CLINICAL_INFIXES + list(defaults.infixes)
    return Tokenizer(
        nlp.vocab,
        rules=clinical_rules(),
        prefix_search=compile_prefix_regex(prefixes).search,
        suffix_search=compile_suffix_regex(suffixes).search,
        infix_finditer=compile_infix_regex(infixes).finditer,
        token_match=re.compile(CLINICAL_TOKEN_MATCH).match,
        url_match=defaults.url_match,
    )


@registry.tokenizers("spacy_softprompt.ClinicalTokenizer.v1")
def create_clinical_tokenizer() -> Callable[[Language], Tokenizer]:
    """Registered factory: returns ``nlp -> Tokenizer`` like ``spacy.Tokenizer.v1``."""
    return build_clinical_tokenizer


def split_at_boundaries(doc: Doc, char_offsets: Iterable[int]) -> int:
    """Split tokens so that every offset falls on a token boundary; returns the number
    of tokens split.

    Offsets already on a boundary, inside the trailing whitespace of a token or
    outside the text are left alone (nothing can be split there). Offsets are
    character (code point) offsets, as ``token.idx``.
    """
    if len(doc) == 0:
        return 0
    starts = [t.idx for t in doc]
    cuts: Dict[int, set] = defaultdict(set)
    for off in char_offsets:
        i = bisect.bisect_right(starts, off) - 1
        if i < 0:
            continue
        token = doc[i]
        if token.idx < off < token.idx + len(token.text):
            cuts[i].add(off - token.idx)
    if not cuts:
        return 0
    with doc.retokenize() as retokenizer:
        for i, local in cuts.items():
            token = doc[i]
            edges = [0] + sorted(local) + [len(token.text)]
            pieces = [token.text[a:b] for a, b in zip(edges, edges[1:])]
            heads = [(token, k) for k in range(len(pieces))]
            retokenizer.split(token, pieces, heads=heads)
    return len(cuts)
