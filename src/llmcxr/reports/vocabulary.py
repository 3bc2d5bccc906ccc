"""The labeler's vocabulary: mention phrases per CheXpert observation, negation and uncertainty
triggers, clause boundaries, side words. Data only; ``labeler.py`` holds the algorithm.

Mention lists are adapted from the CheXpert labeler's phrase files (github.com/stanfordmlgroup/
chexpert-labeler, ``phrases/mention/*.txt`` and ``phrases/unmention/*.txt``), triggers from NegEx
(Chapman et al., 2001) and CheXpert's negation/uncertainty patterns. Every pattern is matched on
lower-case text and only where a word starts (``labeler._word_regex``), so none starts with ``\\b``.
"""

from __future__ import annotations

import re

from llmcxr.findings import CHEXPERT_14, Side

# --- mentions ---------------------------------------------------------------------------------


def _words(*phrases: str) -> str:
    return "|".join(phrases)


# Direct mentions per observation (lower-case text). Exclusions are look-behinds/look-aheads so that
# one regex per observation suffices: e.g. "pericardial effusion" is not a pleural effusion and a
# "calcified nodule" is a granuloma, not a lung lesion (CheXpert "unmention" lists).
MENTIONS: dict[str, str] = {
    "Cardiomegaly": _words(
        r"cardiomegaly",
        r"cardiac (?:enlargement|megaly)",
        r"(?:enlarged|enlargement of the|large) (?:heart|cardiac (?:silhouette|shadow|contour|size))",
    ),
    "Enlarged Cardiomediastinum": _words(
        r"(?:widen(?:ed|ing)|enlarged|enlargement of the|prominent|wide) (?:superior )?"
        r"(?:cardio)?mediastin(?:um|al (?:silhouette|contours?|width|shadow))",
        r"mediastinal (?:widening|enlargement|prominence)",
    ),
    "Lung Lesion": _words(
        r"nodul(?<!calcified nodul)(?<!granulomatous nodul)(?:e|es|ar opacit\w*|ar densit\w*|arity)",
        r"mass(?<!soft tissue mass)(?:es)?\b",
        r"tumou?rs?",
        r"carcinoma",
        r"neoplas\w*",
        r"(?:cavitary|cavitating|spiculated|lung|pulmonary|parenchymal) lesions?",
    ),
    "Lung Opacity": _words(
        r"opaci\w*",
        r"infiltrat\w*",
        r"air[- ]?space (?:disease|process|densit\w*|consolidation)",
        r"(?:increased|patchy|hazy|streaky|airspace|parenchymal) densit(?:y|ies)",
        r"interstitial (?:markings?|pattern|prominence|thickening|lung disease|disease|changes?)",
        r"reticula(?:r|tion)\w*",
        r"scar(?<!pleural scar)(?<!parenchymal scar)(?:s|ring)?\b",
        r"ground[- ]glass",
        r"haziness",
    ),
    "Edema": _words(
        r"edema(?!tous soft)",
        r"oedema",
        r"(?:congestive )?heart failure",
        r"chf\b",
        r"(?:vascular|venous|pulmonary|interstitial) congestion",
        r"congest(?:ion|ive)\b",
        r"vascular (?:prominence|engorgement|indistinctness|redistribution)",
        r"(?:prominen\w*|indistinct\w*|engorged|increased) (?:of the )?(?:pulmonary |lung |central )?"
        r"(?:vascular\w*|vessels|vasculature)",
        r"(?:pulmonary |lung |central )?(?:vascularity|vasculature|vessels) (?:is |are )?(?!not\b)(?:\w+ )?"
        r"(?:increased|prominent|engorged|indistinct|congested)",
        r"(?:pulmonary )?venous hypertension",
        r"cephalization",
        r"kerley",
    ),
    "Consolidation": r"consolidat\w*",
    "Pneumonia": _words(
        r"pneumoni(?:a|as|tis)",
        r"bronchopneumoni(?:a|as)",
        # "granulomatous infection" is the healed sequela of TB/histoplasmosis, not a pneumonia.
        r"infectio(?<!granulomatous infectio)(?<!tuberculous infectio)(?:n|us process|us etiology|us)",
    ),
    "Atelectasis": _words(r"atelecta\w*", r"collapse(?<!vertebral collapse)(?<!body collapse)d?"),
    "Pneumothorax": _words(
        r"pneumothora(?:x|ces)",
        r"hydropneumothora(?:x|ces)",
        r"hemopneumothora(?:x|ces)",
        r"pleural air(?: collections?)?",
    ),
    "Pleural Effusion": _words(
        r"effusion(?<!pericardial effusion)(?<!joint effusion)s?",
        r"pleural fluid",
        r"hydropneumothorax",
    ),
    "Pleural Other": _words(
        r"pleural (?:thickening|scar\w*|plaques?|calcification)",
        r"(?:pleuro-?|pleural[- ])parenchymal scar\w*",
        r"fibrothorax",
        r"thickened pleura",
        r"apical (?:pleural )?cap(?:ping)?",
        r"fissur(?:e|al) thickening",
        r"thicken(?:ed|ing) (?:of |in )?(?:the )?(?:\w+ )?fissures?\b",
    ),
    "Fracture": r"fractur\w*",
    "Support Devices": _words(
        r"tubes?\b",
        r"(?:central venous|central|venous|picc|subclavian|jugular|ij|arterial|swan[- ]ganz|dialysis|"
        r"port|midline|femoral|hickman|tunneled)\s(?:line|catheter)s?",
        r"catheters?",
        r"picc\b",
        r"port-?a-?cath",
        r"mediport",
        r"pacemaker",
        r"pacer\b",
        r"defibrillator",
        r"a?icd\b",
        r"(?:pacing|pacer|pacemaker|transvenous|epicardial|icd|defibrillator|ventricular|atrial) (?:leads?|wires?)",
        r"stents?",
        r"(?:prosthetic|mechanical|bioprosthetic) (?:aortic |mitral )?valve",
        r"valve (?:replacement|prosthesis)",
        r"hardware",
        r"drains?\b",
        r"balloon pump",
        r"iabp\b",
        r"devices?\b",
        r"(?:monitor|monitoring|ekg|ecg|pacer|pacing|pacemaker|cardiac|icd|defibrillator|transvenous|epicardial|"
        r"ventricular|atrial|two|three|2|3) leads?\b",
        r"leads? (?:overl\w*|project\w*|terminat\w*|in the|over the|tip)",
        r"generators?\b",
        r"stimulators?\b",
        r"tips? (?:is |are )?(?:in|at|project\w*|overl\w*|terminat\w*|near|visuali[sz]ed|positioned|located|extend\w*|within)\b",
        r"prosthe(?:sis|ses|tic)\b",
        r"arthroplast\w*",
        r"screws?\b",
        r"occluder",
        r"shunt\b",
        r"tubing",
        r"ivc filter",
        r"port\b",
        r"lvad\b",
    ),
}

# Other abnormalities that are not among the 14 but rule out "No Finding" (CheXpert's
# phrases/mention/no_finding.txt, plus low lung volumes and aortic tortuosity).
OTHER_FINDINGS = _words(
    r"emphysema\w*",
    r"blunt\w*",
    r"elevat(?:ed|ion) (?:of the )?(?:left |right )?(?:hemi)?diaphragm\w*",
    r"(?:hemi)?diaphragm\w* (?:is |are )?elevat\w*",
    r"eventration",
    r"scolio\w*",
    r"degenera\w*",
    r"calcifi\w*",
    r"hyperinflat\w*",
    r"hyperexpan\w*",
    r"hyperdisten\w*",
    r"hyperaera\w*",
    r"copd\b",
    r"chronic obstructive",
    r"hernia",
    r"osteophyt\w*",
    r"spondylo\w*",
    r"bronchiolitis",
    r"bronchitis",
    r"airways? disease",
    r"thicken(?<!pleural thicken)\w*",
    r"bullae?\b",
    r"bullous",
    r"atherosclero\w*",
    r"osteopeni\w*",
    r"metasta\w*",
    r"granulom\w*",
    r"pneumomediastinum",
    r"pneumoperitoneum",
    r"cuffing",
    r"kyphos\w*",
    r"kyphotic",
    r"hypertension",
    r"tortu\w*",
    r"ectatic",
    r"ectasia",
    r"aneurysm\w*",
    r"bronchiectasis",
    r"fibros\w*",
    r"fibrotic",
    r"deformit\w*",
    r"hemorrhage",
    r"hematoma",
    r"contusion",
    r"aspiration",
    r"low (?:lung )?volumes?",
    r"(?:lung )?volumes? (?:are |is )?(?:low|diminished|decreased)",
    r"hypoinflat\w*",
    r"hypoexpan\w*",
    r"(?:poor|shallow|suboptimal) inspirat\w*",
    r"volume loss",
    r"cysts?\b",
    r"cystic",
    r"densit(?:y|ies)",
    r"lucenc\w*",
    r"prominen\w*",
    r"levoscolio\w*",
    r"dextroscolio\w*",
    r"curvature",
    r"spur(?:s|ring)?\b",
    r"foreign bod\w*",
    r"crowding",
    r"hyperlucen\w*",
)

# Anchored observations: an anchor needs a state word; (observation, anchor regex).
ANCHORS: dict[str, str] = {
    "Cardiomegaly": r"heart(?: size)?(?! failure)|cardiac (?:silhouette|shadow|contours?|size)",
    "Enlarged Cardiomediastinum": (
        r"(?:cardio)?mediastin(?:um|al (?:silhouette|contours?|width|shadow|structures))|"
        r"cardiomediastinal (?:silhouette|contours?)|mediastinum"
    ),
}
# One state regex; alternation order matters at a shared start ("not enlarged" before "enlarged").
# Heart size / mediastinum states. "Upper limits of normal" and "top normal" say the size is still
# within the normal range (negative; IU taggers agree: 7 of 90 such reports tagged cardiomegaly);
# "borderline" hedges (uncertain, as CheXpert reads it; IU tags 51 of 56 as cardiomegaly).
# One regex; alternation order matters at a shared start ("not enlarged" before "enlarged").
STATE = re.compile(
    r"(?<![a-z0-9])(?:(?P<borderline>borderline)"
    r"|(?P<normal>not (?:significantly |markedly |appreciably )?(?:enlarged|widened|increased)|"
    r"(?:at )?(?:the )?(?:upper|top|high) (?:limits?|range|end) (?:of )?normal|(?:upper|top|high)[- ]normal|"
    r"within (?:the )?normal (?:limits|range)|normal|unremarkable)"
    r"|(?P<enlarged>enlarg\w*|large|increased|prominen\w*|widen\w*|wide))"
)

# Findings that can have a side: all but the whole-patient and heart/mediastinum ones.
LATERAL = frozenset(CHEXPERT_14) - {"No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly"}
SIDE = re.compile(
    r"(?<![a-z0-9])(?:left|lingula\w*|right|bilateral\w*|both|bibasilar|bibasal|bibasally|biapical|bi-lateral)\b"
)
SIDE_OF = {"l": Side.LEFT, "r": Side.RIGHT}  # first letter; everything else is bilateral
PLURAL_PAIRED = re.compile(r"effusions|pneumothoraces")

# --- triggers ---------------------------------------------------------------------------------
# Kinds: "pseudo" (negates nothing), "neg_pre", "neg_post", "unc_pre", "unc_post", "neg_any",
# "unc_any" (before or after), "not" (negation within 3 words before). Alternation order matters:
# at one start position the first listed alternative wins.
TRIGGER_KINDS: list[tuple[str, str]] = [
    (
        "pseudo",
        r"no (?:significant |interval |appreciable |substantial |definite |visible |other )?"
        r"(?:change|increase|decrease|improvement|worsening|progression)\w*|"
        r"not (?:significantly |substantially )?(?:changed|increased|decreased|improved|worsened)|"
        r"without (?:significant |interval )?(?:change|increase|decrease)|"
        r"(?:not|no) only|gram[- ]negative",
    ),
    (
        "unc_any",
        r"(?:can ?not|can't|could not) (?:be )?(?:entirely |completely |definitely )?(?:exclude[ds]?|rule[ds]? out)\b|"
        r"not (?:be )?(?:entirely |completely )?(?:excluded|ruled out)",
    ),
    ("unc_pre", r"no new|no evidence to rule out"),
    (
        "unc_post",
        r"(?:is|are) (?:also )?(?:suspected|questioned|possible|likely|probable|not excluded|"
        r"a possibility|considered)|(?:could|may|might) (?:also )?be (?:present|seen|there)|\?",
    ),
    (
        "neg_post",
        r"(?:is |are |was |were )?absent|"
        r"(?:is |are |was |were )?not (?:be )?(?:clearly |definitely |well )?(?:seen|identified|present|"
        r"visuali[sz]ed|appreciated|demonstrated|evident|noted|detected|visible|apparent|observed)|"
        r"(?:is |are )?no longer (?:seen|present|visuali[sz]ed|evident|identified|visible|apparent)|"
        r"(?:(?:is|are|appears?) )?within (?:the )?(?:normal limits|limits of normal)",
    ),
    (
        "neg_any",
        r"(?:(?:is|are|was|were|has|have)(?: been)? )?(?:now |since |completely |entirely |nearly |near )?"
        r"(?:resolved|cleared|removed|withdrawn)|no longer",
    ),
    (
        "neg_pre",
        r"no\b|without\b|negative for|free of|clear of|absence of|nor\b|neither\b|never\b|"
        r"resolution of|removal of|interval clearing of|rule[sd] out|denies",
    ),
    (
        "unc_any",
        r"versus|vs\b\.?|differential|or less likely",
    ),
    (
        "unc_pre",
        r"possibl[ey]|probabl[ey]|likely|may\b|might\b|could\b|question(?:able|ably)?(?: of)?|"
        r"suspicious|suspect\w*|suspicion|suggest\w*|concern(?:ing)?(?: for)?|worrisome|equivocal|"
        r"indeterminate|uncertain|presum\w*|borderline|consider\w*|r/o\b|rule out|"
        r"may represent|apparent|atypical|evaluat(?:e|ion) for|to evaluate|assess(?:ment)? for",
    ),
    ("not", r"not\b"),
]


# Suggestion words that a preceding negation turns into negation ("no findings to suggest pneumonia").
WEAK_UNCERTAIN = re.compile(r"suggest|concern|suspicious|worrisome|suspect|apparent")

# Clause ends: a sentence end (". " not "4.5"), ";", ":", a line break, a scope-ending conjunction;
# "there is" and "and the" start a new clause (the boundary is before them).
CLAUSE_END = re.compile(
    r"[.!?;:\n]|(?<![a-z0-9])(?:but|however|although|though|except|aside from|apart from|otherwise|whereas|which|"
    r"with the exception of|there is|there are|there has|there have|and the|and there)\b"
)
OPENERS = {"there is", "there are", "there has", "there have", "and the", "and there"}
# Speed gate: a mention regex runs only if one of these substrings occurs in the report (a ``str``
# ``in`` test costs ~0.1 us, a regex pass ~20-40 us). Every alternative of the pattern contains one
# of its keys; tests/test_labeler.py checks that gated and ungated labeling agree. No entry: always run.
GATES: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": ("cardi", "heart"),
    "Enlarged Cardiomediastinum": ("mediastin",),
    "Lung Lesion": ("nodul", "mass", "tumo", "carcinoma", "neoplas", "lesion"),
    "Lung Opacity": (
        "opaci",
        "infiltrat",
        "space",
        "densit",
        "interstitial",
        "reticula",
        "scar",
        "glass",
        "haziness",
    ),
    "Edema": ("edema", "failure", "chf", "congest", "vascul", "vessel", "cephaliz", "kerley", "venous"),
    "Consolidation": ("consolidat",),
    "Pneumonia": ("pneumoni", "infectio"),
    "Atelectasis": ("atelecta", "collapse"),
    "Pneumothorax": ("pneumothora", "pleural air"),
    "Pleural Effusion": ("effusion", "pleural fluid", "hydropneumothora"),
    "Pleural Other": ("pleura", "fibrothorax", "apical", "fissur"),
    "Fracture": ("fractur",),
}
ANCHOR_GATES: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": ("heart", "cardiac"),
    "Enlarged Cardiomediastinum": ("mediastin",),
}
