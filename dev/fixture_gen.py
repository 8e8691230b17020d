"""Deterministic generator for the shipped fixture data in ``ipt_utils/fixtures/``.

A development tool, not part of the runtime package: the pipeline only reads the committed
files it wrote. tests/test_fixtures.py regenerates them and compares byte for byte.

Usage::

    make fixtures                             # (re)write every fixture file
    python dev/fixture_gen.py --check         # regenerate into a temp dir; exit 1 on any diff
    python dev/fixture_gen.py --out DIR       # write somewhere else

Everything is built procedurally, with the standard library only, from seeded random choices
over template banks written for this project (no external data, no network):

1. A *world* of invented fact records (cities, rivers, scientists, species, minerals, treaties,
   dishes; genes, diseases, drugs, trials; companies, earnings, rate decisions, mergers, market
   moves). Each record kind has a function returning its *facts*: sentence variants that render
   the fact, plus questions answerable from it (answer, a distractor pool key, a reasoning line).
2. Paragraphs render 1-3 related records (3-7 sentences, 60-160 words).
3. raw_corpus.jsonl renders world records; the evaluation twins ask about the same world records
   (so pre-training on the corpus could in principle help); synth_collection.jsonl renders a
   second, disjoint world so its contexts are new text.

Output is byte-identical across runs: separate string-seeded ``random.Random`` streams per file,
no set iteration, fixed key order, ``ensure_ascii=False`` and ``"\\n"`` line ends.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import random
import re
import sys
import tempfile
from pathlib import Path

SEED = 2406_14491
FIXTURE_DIR = Path(__file__).resolve().parent.parent / "ipt_utils" / "fixtures"

N_CORPUS = {"general": 120, "biomedicine": 90, "finance": 90}
N_SYNTH_PER_DATASET = 20
N_INSTRUCTIONS = 200
N_GENERAL_INSTRUCTIONS = 120
N_EVAL_GENERAL = 40
N_EVAL_MMLU = 60
N_EVAL_DOMAIN = 30
WORDS_MIN, WORDS_MAX = 60, 160

QA_TYPES = ("free-form", "multiple-choice", "free-form+CoT", "multiple-choice+CoT")
MARKUP_TOKENS = ("<CON>", "</CON>", "<QUE>", "<ANS>", "</END>", "<s>", "</s>")
GENERAL_TASKS = ("arc_easy", "arc_challenge", "boolq", "piqa", "siqa", "winogrande",
                 "openbookqa", "hellaswag", "mmlu")
DOMAIN_MC_TASKS = ("pubmedqa", "chemprot", "rct", "mqp", "usmle", "fpb", "fiqa_sa", "headline")
DOMAIN_GEN_TASKS = ("convfinqa", "ner")
EVAL_TASKS = GENERAL_TASKS + DOMAIN_MC_TASKS + DOMAIN_GEN_TASKS
COT_SUFFIX = "\nLet's think step by step."
COT_ANSWER = "\nTherefore, the answer is "


def _rng(name: str) -> random.Random:
    """One independent, stable stream per purpose (str seeds hash with sha512: no PYTHONHASHSEED)."""
    return random.Random(f"{SEED}:{name}")


# ----------------------------------------------------------------------------------------------
# Small text helpers
# ----------------------------------------------------------------------------------------------
_LOWERABLE = ("Because", "However", "Therefore", "Today", "The", "In", "After", "Although",
              "Since", "During", "As", "Under", "Following", "Historians", "Roughly", "Cooks",
              "Patients", "There", "Traders", "Shares", "Net", "Revenue", "A", "Its", "Gold",
              "Headquartered", "Located", "Rising", "Found", "Born", "First", "Approved",
              "Compared", "Chief", "With", "Written", "Adults", "Visitors", "Mice", "Inherited",
              "Infection", "Surveys", "Doctors", "Field", "Anglers", "Boats", "Numbers", "Other",
              "Managers", "Adverse", "Mutations", "Analysts", "For", "On", "Six", "According",
              "Located", "Most", "An", "Approved")


def cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def lower_first(s: str) -> str:
    """Lower-case a sentence's first letter when it starts with an ordinary word (not a name)."""
    first = s.split(" ", 1)[0].rstrip(",;")
    return s[:1].lower() + s[1:] if first in _LOWERABLE else s


def n_words(s: str) -> int:
    return len(s.split())


def join_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def art(phrase: str) -> str:
    """Indefinite article + phrase."""
    return ("an " if phrase[:1].lower() in "aeiou" else "a ") + phrase


def poss(name: str) -> str:
    """Possessive form: "Acme Works'" / "Clara Ostrom's"."""
    return name + ("'" if name.endswith("s") else "'s")


def money(x: float) -> str:
    return f"{x:,.1f}"


# ----------------------------------------------------------------------------------------------
# Names
# ----------------------------------------------------------------------------------------------
SYL1 = ["al", "bar", "cal", "dor", "el", "fal", "gor", "har", "ist", "jal", "kor", "lam", "mer",
        "nal", "or", "pal", "quar", "ral", "sol", "tam", "ul", "var", "wel", "yor", "zan", "bel",
        "cas", "del", "fen", "gar", "hel", "kel", "lor", "mar", "nor", "pel", "ros", "sel", "tor",
        "ves", "brin", "drav", "tek", "os", "ith", "mok", "sav", "thal"]
SYL2 = ["a", "e", "i", "o", "ar", "en", "is", "or", "an", "el", "u", "al", "in", "ov"]
END_CITY = ["dor", "mere", "wick", "holm", "stad", "ford", "grad", "ven", "mouth", "burg", "ton",
            "via", "nor", "lis", "mar", "rith", "haven", "brook"]
END_COUNTRY = ["ia", "land", "ova", "ene", "ar", "istan", "onia", "esh"]
END_RIVER = ["ne", "va", "is", "ro", "ra", "lle", "sk", "da", "an"]
END_SURNAME = ["ov", "son", "ez", "ini", "berg", "ard", "elli", "ay", "ski", "ent", "ow", "ani",
               "sen", "ard", "ucci", "ides"]
FIRST_NAMES = ["Amara", "Bogdan", "Clara", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ines",
               "Jonas", "Kofi", "Lena", "Mateo", "Nadia", "Oskar", "Priya", "Quentin", "Rosa",
               "Samir", "Tessa", "Umar", "Vera", "Wim", "Yara", "Zoltan", "Aiko", "Bruno",
               "Chiara", "Dario", "Esme", "Femi", "Gita", "Henrik", "Ilse", "Jun", "Leila"]


class Namer:
    """Draws invented names and never hands out the same one twice."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.used: set[str] = set()  # membership only; never iterated

    def _unique(self, make) -> str:
        for _ in range(1000):
            name = make()
            if name not in self.used and len(name) >= 4:
                self.used.add(name)
                return name
        raise RuntimeError("name space exhausted")

    def word(self, ends: list[str], two: bool = True) -> str:
        r = self.rng
        return self._unique(lambda: (r.choice(SYL1) + (r.choice(SYL2) if two else "")
                                     + r.choice(ends)).capitalize())

    def city(self) -> str:
        return self.word(END_CITY)

    def country(self) -> str:
        return self.word(END_COUNTRY, two=self.rng.random() < 0.5)

    def river(self) -> str:
        return self.word(END_RIVER, two=False)

    def person(self) -> str:
        r = self.rng
        return self._unique(lambda: r.choice(FIRST_NAMES) + " "
                            + (r.choice(SYL1) + r.choice(SYL2) + r.choice(END_SURNAME)).capitalize())

    def plain(self, ends: list[str]) -> str:
        return self.word(ends, two=self.rng.random() < 0.6)

    def gene(self) -> str:
        r = self.rng
        letters = "BCDFGHKLMNPRSTVXZ"
        return self._unique(lambda: "".join(r.choice(letters) for _ in range(3)) + str(r.randint(1, 19)))

    def ticker(self, name: str) -> str:
        base = re.sub(r"[^A-Za-z]", "", name).upper()
        for n in (3, 4):
            t = base[:n]
            if t not in self.used:
                self.used.add(t)
                return t
        return self._unique(lambda: base[:2] + self.rng.choice("XQZ") + self.rng.choice("KVW"))


# ----------------------------------------------------------------------------------------------
# Template banks (our own wording)
# ----------------------------------------------------------------------------------------------
ORIGINS = ["a river ford", "a fortified monastery", "a fishing village", "a trading post",
           "a mining camp", "a royal hunting lodge", "a salt market", "a ferry crossing"]
INDUSTRIES = [
    ("glassmaking", "fine quartz sand was found along its riverbanks"),
    ("shipbuilding", "oak forests grew close to its harbour"),
    ("textile weaving", "large sheep farms surrounded the town"),
    ("clockmaking", "skilled metalworkers settled there after a guild charter"),
    ("paper milling", "its fast-flowing streams could drive heavy mill wheels"),
    ("salt trading", "rich salt springs lay beneath the old town"),
    ("wine production", "its south-facing slopes receive long hours of sunshine"),
    ("tea trading", "it sat where two caravan routes crossed"),
    ("printing", "its university attracted many scholars and booksellers"),
    ("leather tanning", "cattle markets were held there every week"),
    ("porcelain", "a deposit of white kaolin clay was discovered nearby"),
    ("boat racing", "the river widens into a calm lake beside the town"),
]
SETBACKS = ["a great fire", "a cholera outbreak", "a long drought", "a severe flood",
            "the closure of its silver mines", "a collapse in wool prices", "a harbour blockade",
            "an earthquake"]
LANDMARKS = ["Bridge", "Clock Tower", "Cathedral", "Lighthouse", "Old Market Hall", "Observatory",
             "Water Gate"]
REGIONS = ["north", "south", "east", "west", "centre"]
FISH = [("silver eels", "travel to the sea to spawn"), ("striped perch", "hunt in shallow reeds"),
        ("giant catfish", "can weigh more than 40 kilograms"),
        ("spotted trout", "need cold, oxygen-rich water"), ("river sturgeon", "can live for a century"),
        ("freshwater mussels", "filter large volumes of water every day")]
OBSTACLES = ["shallow rapids", "a series of waterfalls", "shifting sandbanks", "thick winter ice"]
FIELDS = [
    ("chemist", ["a catalyst that splits water at low temperature", "a blue dye that resists fading",
                 "a method for purifying rare salts", "a new family of light metals"]),
    ("physicist", ["a way to measure the speed of sound in metals", "a cold light source",
                   "the magnetic properties of layered crystals", "a precise pendulum clock"]),
    ("botanist", ["a frost-resistant wheat variety", "a fungus that protects tree roots",
                  "the nitrogen cycle of marsh plants", "a fast-growing bamboo species"]),
    ("astronomer", ["a faint comet with a 70-year orbit", "a double star in the northern sky",
                    "a method for timing eclipses", "dust rings around a distant planet"]),
    ("geologist", ["a buried volcanic ridge", "the cause of the coastal landslides",
                   "a layer of ancient ash", "a method for dating river gravels"]),
    ("physician", ["a vaccine against sheep fever", "the link between dirty wells and fever",
                   "a blood test for anaemia", "a splint for broken wrists"]),
]
METHODS = ["repeated every experiment three times", "published all of the raw measurements",
           "invited rival teams to check the work", "built the instruments by hand",
           "kept careful daily notebooks"]
AWARDS = ["Golden Compass", "Meridian", "Lantern", "Royal Quill", "Silver Anchor"]
ANIMALS = [("heron", "bird"), ("vole", "mammal"), ("salamander", "amphibian"), ("finch", "bird"),
           ("beetle", "insect"), ("trout", "fish"), ("moth", "insect"), ("lizard", "reptile"),
           ("bat", "mammal"), ("otter", "mammal"), ("toad", "amphibian"), ("owl", "bird")]
HABITATS = ["the reed marshes", "the pine forests", "the high meadows", "the coastal dunes",
            "the limestone caves", "the river valleys", "the dry scrublands"]
DIETS = ["small fish and frogs", "seeds and berries", "insects and spiders", "freshwater snails",
         "grass roots", "tree bark and lichen", "nectar"]
ADAPTATIONS = [  # (feature, reason, animal classes it suits)
    ("thick, oily fur", "it swims in icy streams", ("mammal",)),
    ("very large eyes", "it hunts at night", ("bird", "mammal", "reptile", "insect", "amphibian")),
    ("a long, curved bill", "it probes deep mud for food", ("bird",)),
    ("pale, sand-coloured skin", "it hides from hawks on open dunes", ("reptile", "amphibian")),
    ("broad webbed feet", "it walks on soft mud", ("bird", "amphibian", "mammal")),
    ("a waxy coat", "it must survive long dry summers", ("insect",)),
    ("dark, mottled scales", "it hides among stones on the riverbed", ("fish", "reptile")),
    ("a streamlined body", "it swims against strong currents", ("fish", "mammal")),
    ("dull brown wings", "it rests on tree bark during the day", ("insect", "bird")),
]
THREATS = ["the draining of wetlands", "the clearing of old forests", "river pollution",
           "the spread of farmland", "invasive rats"]
COLORS = ["deep green", "pale blue", "rusty red", "golden yellow", "violet", "milky white",
          "jet black"]
MINERAL_USES = [("conducts heat well", "cooking pans"), ("resists acids", "laboratory tiles"),
                ("glows under ultraviolet light", "safety signs"),
                ("is very hard", "cutting tools"), ("splits into thin sheets", "window panes"),
                ("absorbs water", "cat litter"), ("is light and strong", "bicycle frames")]
TREATY_CAUSES = ["both sides claimed the same fishing grounds", "a border river had changed course",
                 "merchants demanded lower tolls on the mountain pass",
                 "a long war had emptied both treasuries", "a royal marriage united the two courts"]
TREATY_RESULTS = ["the border was fixed along the river", "tolls on the pass were abolished",
                  "the fishing grounds were shared", "prisoners of war were released",
                  "a joint customs union was created"]
DISH_BASES = ["dumplings", "flatbread", "fish soup", "bean stew", "rice cakes", "honey pastry",
              "noodles", "lamb pie"]
INGREDIENTS = ["smoked trout", "chestnut flour", "white beans", "wild mushrooms", "goat cheese",
               "barley", "dried apricots", "river crayfish"]
OCCASIONS = [("at weddings", "it is said to bring a long marriage"),
             ("on the first day of spring", "its ingredients are the first fresh ones of the year"),
             ("at harvest festivals", "it uses the new grain"),
             ("to travellers", "it keeps well on long journeys"),
             ("during the winter fair", "it warms people standing in the cold")]

# biomedicine
TISSUES = ["liver", "kidney", "heart muscle", "retina", "bone marrow", "skin", "lung",
           "pancreas", "brain", "intestine"]
PROTEINS = [("a membrane transporter", "moves sodium ions across the cell membrane"),
            ("a DNA repair enzyme", "fixes breaks in damaged DNA"),
            ("a growth factor receptor", "signals cells to divide"),
            ("a structural protein", "holds the cell skeleton together"),
            ("a protein kinase", "switches other proteins on by adding phosphate groups"),
            ("an ion channel", "lets calcium flow into the cell"),
            ("a hormone receptor", "responds to stress hormones"),
            ("a metabolic enzyme", "breaks down fatty acids")]
MUTATION_EFFECTS = ["reduce the activity of the protein", "make the protein unstable",
                    "cause the protein to stay permanently active", "block the protein from folding"]
PHENOTYPES = ["enlarged kidneys", "poor night vision", "slow wound healing", "weak bones",
              "irregular heartbeats", "low blood sugar", "thin skin"]
SYMPTOMS = ["fatigue", "joint pain", "fever", "dry cough", "blurred vision", "night sweats",
            "muscle weakness", "skin rash", "headache", "shortness of breath", "weight loss",
            "dizziness", "abdominal pain", "tremor", "palpitations", "swollen ankles",
            "hair loss", "numb fingers"]
ORGANS = ["liver", "kidneys", "lungs", "heart", "skin", "eyes", "joints", "nervous system",
          "blood", "thyroid"]
PATHOGEN_KIND = ["virus", "bacterium", "parasite"]
DISEASE_ENDS = ["osis", "itis", "emia", "opathy"]
DRUG_CLASSES = [  # (class, stem, chemprot relation, verb phrase)
    ("kinase inhibitor", "tinib", "inhibitor", "inhibiting"),
    ("beta blocker", "olol", "antagonist", "blocking"),
    ("receptor agonist", "terol", "agonist", "stimulating"),
    ("enzyme activator", "vatin", "activator", "activating"),
    ("prodrug", "profen", "substrate", "being converted by"),
    ("monoclonal antibody", "zumab", "inhibitor", "neutralising"),
    ("channel blocker", "dipine", "antagonist", "blocking"),
    ("statin", "vastatin", "inhibitor", "inhibiting"),
]
SIDE_EFFECTS = ["nausea", "mild headache", "dry mouth", "insomnia", "muscle cramps", "rash",
                "dizziness", "diarrhoea", "fatigue"]
ROUTES = ["as a tablet", "by intravenous infusion", "as a weekly injection", "as an inhaler",
          "as a skin patch"]
ENDPOINTS = ["symptom score", "relapse rate", "blood pressure", "viral load", "tumour size",
             "hospital admissions", "pain score", "liver enzyme levels"]
ADVERSE = ["headache", "nausea", "injection-site pain", "fatigue", "upper respiratory infection",
           "dizziness"]

# finance
SECTORS = [("software", "a cloud accounting platform"), ("logistics", "same-day freight service"),
           ("renewable energy", "rooftop solar panels"), ("food processing", "frozen ready meals"),
           ("semiconductor", "low-power memory chips"), ("retail banking", "small-business loans"),
           ("pharmaceutical", "generic heart medicines"), ("telecommunications", "fibre broadband"),
           ("consumer electronics", "wireless headphones"), ("insurance", "crop insurance"),
           ("shipping", "refrigerated container transport"), ("steel", "rolled steel sheets")]
CO_SUFFIX = ["Corp", "Holdings", "Systems", "Group", "Industries", "Technologies", "Partners",
             "Works"]
REV_UP = ["demand for its main product grew strongly", "it opened new stores in three regions",
          "prices for its services increased", "a large government contract started",
          "sales abroad doubled"]
REV_DOWN = ["a key customer cancelled its contract", "raw material costs rose sharply",
            "a factory fire halted production for two months",
            "weak consumer spending hurt sales", "a price war cut its margins"]
GUIDANCE_CITES = ["strong order books", "higher energy costs", "a weaker currency",
                  "new product launches", "slowing demand in Europe", "supply chain delays"]
QUARTERS = ["first quarter", "second quarter", "third quarter", "fourth quarter"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December"]
DEAL_RATIONALES = ["the two firms sell to the same customers", "it gains access to new markets",
                   "the combined company can cut costs", "it secures a supplier of key parts",
                   "it adds a fast-growing product line"]
DEAL_RISKS = ["competition regulators have raised concerns", "some shareholders oppose the price",
              "financing costs have risen", "unions have asked for job guarantees"]
MARKET_REASONS = ["inflation data came in lower than expected", "oil prices jumped overnight",
                  "a large bank reported surprise losses", "the central bank hinted at rate cuts",
                  "technology shares sold off", "exporters gained on a weaker currency"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]


# ----------------------------------------------------------------------------------------------
# World of fact records
# ----------------------------------------------------------------------------------------------
DOMAIN_KINDS = {
    "general": ["city", "river", "scientist", "species", "mineral", "treaty", "dish"],
    "biomedicine": ["gene", "disease", "drug", "trial"],
    "finance": ["company", "earnings", "rates", "merger", "market"],
}
KIND_DOMAIN = {k: d for d, ks in DOMAIN_KINDS.items() for k in ks}


def build_world(rng: random.Random, namer: Namer, scale: float = 1.0) -> dict[str, list[dict]]:
    """Create linked fact records. `scale` multiplies the number of records per kind."""
    n = lambda base: max(4, int(base * scale))  # noqa: E731
    R = rng
    W: dict[str, list[dict]] = {k: [] for ks in DOMAIN_KINDS.values() for k in ks}
    countries = [namer.country() for _ in range(n(14))]
    W["_countries"] = [{"name": c} for c in countries]

    for _ in range(n(16)):
        length = R.randrange(120, 2400, 10)
        W["river"].append({
            "kind": "river", "name": namer.river(), "country": R.choice(countries), "length": length,
            "mountains": namer.plain(["ra", "ek", "on", "ir", "as"]), "sea": namer.plain(["ic", "ar", "en", "ay"]),
            "fish": R.choice(FISH), "obstacle": R.choice(OBSTACLES),
            "dam": namer.plain(["ock", "ey", "ard"]), "dam_year": R.randint(1890, 1995), "rel": []})
    for _ in range(n(24)):
        river = R.choice(W["river"])
        ind, reason = R.choice(INDUSTRIES)
        founded = R.randint(900, 1850)
        W["city"].append({
            "kind": "city", "name": namer.city(), "country": river["country"], "river": river,
            "region": R.choice(REGIONS), "founded": founded, "origin": R.choice(ORIGINS),
            "pop": R.randrange(12_000, 2_400_000, 100), "industry": ind, "reason": reason,
            "elev": R.randrange(5, 1400, 5), "setback": R.choice(SETBACKS),
            "setback_year": R.randint(founded + 80, 1950),
            "landmark": R.choice(LANDMARKS), "landmark_year": R.randint(founded + 20, 1990),
            "rel": [river]})
    for _ in range(n(18)):
        field, discs = R.choice(FIELDS)
        born = R.randint(1780, 1950)
        city = R.choice(W["city"])
        W["scientist"].append({
            "kind": "scientist", "name": namer.person(), "field": field, "born": born, "city": city,
            "discovery": R.choice(discs), "disc_year": born + R.randint(24, 50),
            "univ": R.choice(W["city"])["name"], "method": R.choice(METHODS),
            "award": R.choice(AWARDS), "rel": [city]})
    for _ in range(n(16)):
        animal, klass = R.choice(ANIMALS)
        adapt, why, _ = R.choice([a for a in ADAPTATIONS if klass in a[2]])
        W["species"].append({
            "kind": "species", "name": f"{namer.plain(['an', 'ese', 'ish', 'ic'])} {animal}",
            "class": klass, "country": R.choice(countries), "habitat": R.choice(HABITATS),
            "diet": R.choice(DIETS), "lifespan": R.randint(2, 40), "adapt": adapt, "adapt_why": why,
            "threat": R.choice(THREATS), "decline": R.randrange(15, 80, 5),
            "since": R.randint(1950, 2010), "rel": []})
    for _ in range(n(14)):
        prop, use = R.choice(MINERAL_USES)
        W["mineral"].append({
            "kind": "mineral", "name": namer.plain(["ite", "ine", "ase"]), "color": R.choice(COLORS),
            "country": R.choice(countries), "year": R.randint(1750, 1990),
            "hardness": R.choice([2, 2.5, 3, 3.5, 4, 5, 5.5, 6, 6.5, 7, 7.5, 8]),
            "melt": R.randrange(300, 2600, 10), "prop": prop, "use": use, "rel": []})
    for _ in range(n(12)):
        city = R.choice(W["city"])
        a, b = R.sample(countries, 2)
        year = R.randint(1300, 1920)
        W["treaty"].append({
            "kind": "treaty", "name": f"Treaty of {city['name']}", "city": city, "year": year,
            "a": a, "b": b, "cause": R.choice(TREATY_CAUSES), "result": R.choice(TREATY_RESULTS),
            "withdraw": year + R.randint(5, 60), "rel": [city]})
    for _ in range(n(12)):
        city = R.choice(W["city"])
        occ, why = R.choice(OCCASIONS)
        W["dish"].append({
            "kind": "dish", "name": f"{city['name']} {R.choice(DISH_BASES)}", "city": city,
            "ingredient": R.choice(INGREDIENTS), "minutes": R.randrange(20, 240, 10),
            "occasion": occ, "occ_why": why, "century": R.randint(12, 19), "rel": [city]})

    # biomedicine
    for _ in range(n(16)):
        prot, func = R.choice(PROTEINS)
        W["gene"].append({
            "kind": "gene", "name": namer.gene(), "chrom": R.randint(1, 22), "protein": prot,
            "function": func, "tissue": R.choice(TISSUES), "mutation": R.choice(MUTATION_EFFECTS),
            "phenotype": R.choice(PHENOTYPES), "disease": None, "rel": []})
    for i in range(n(16)):
        gene = W["gene"][i % len(W["gene"])]
        infectious = R.random() < 0.3
        name = (namer.plain(DISEASE_ENDS).capitalize() if R.random() < 0.6
                else f"{namer.plain(END_SURNAME)} syndrome")
        dz = {"kind": "disease", "name": name, "organ": R.choice(ORGANS),
              "course": R.choice(["chronic", "acute", "progressive"]),
              "symptoms": R.sample(SYMPTOMS, 3), "gene": None if infectious else gene,
              "pathogen": (f"{namer.plain(['ora', 'ella', 'ium'])} {R.choice(PATHOGEN_KIND)}"
                           if infectious else None),
              "prev": R.randint(2, 900), "onset": R.randrange(5, 70, 5), "drug": None,
              "rel": [] if infectious else [gene]}
        if not infectious and gene["disease"] is None:
            gene["disease"] = dz
        W["disease"].append(dz)
    for i in range(n(32)):
        cls, stem, rel, verb = DRUG_CLASSES[i % len(DRUG_CLASSES)]
        gene = R.choice(W["gene"])
        dz = R.choice(W["disease"])
        hl = R.choice([3, 4, 6, 8, 12, 20, 24, 30, 36, 48])
        freq = "once daily" if hl >= 20 else R.choice(["twice daily", "three times daily"])
        name = (R.choice(SYL1) + R.choice(SYL2) + stem).capitalize()
        while name in namer.used:
            name = (R.choice(SYL1) + R.choice(SYL1) + stem).capitalize()
        namer.used.add(name)
        dr = {"kind": "drug", "name": name, "class": cls, "relation": rel, "verb": verb,
              "gene": gene, "disease": dz, "dose": R.choice([5, 10, 20, 25, 40, 50, 100, 150, 200, 400]),
              "freq": freq, "hl": hl, "side": R.choice(SIDE_EFFECTS), "side_pct": R.randint(2, 30),
              "route": R.choice(ROUTES), "rel": [gene, dz]}
        if dz["drug"] is None:
            dz["drug"] = dr
        W["drug"].append(dr)
    outcomes = ["yes", "no", "maybe"]
    for i in range(n(36)):
        dr = W["drug"][i % len(W["drug"])]
        W["trial"].append({
            "kind": "trial", "name": f"the {dr['name']} trial", "drug": dr, "disease": dr["disease"],
            "n": R.randrange(60, 2400, 2), "weeks": R.choice([8, 12, 16, 24, 26, 48, 52, 104]),
            "endpoint": R.choice(ENDPOINTS), "outcome": outcomes[i % 3],
            "effect": R.randint(8, 45), "p": (R.choice(["0.001", "0.003", "0.01", "0.02"])
                                              if i % 3 == 0 else R.choice(["0.21", "0.34", "0.48", "0.62"])),
            "ae": R.choice(ADVERSE), "ae_pct": R.randint(3, 25), "rel": [dr]})

    # finance
    for _ in range(n(24)):
        sector, product = R.choice(SECTORS)
        name = f"{namer.plain(['ex', 'on', 'ia', 'is', 'ar', 'um'])} {R.choice(CO_SUFFIX)}"
        y1 = R.randint(2016, 2023)
        r0 = round(R.uniform(80, 4000), 1)
        up = R.random() < 0.6
        r1 = round(r0 * (1 + (R.uniform(0.04, 0.35) if up else -R.uniform(0.03, 0.25))), 1)
        city = R.choice(W["city"])
        W["company"].append({
            "kind": "company", "name": name, "ticker": namer.ticker(name), "sector": sector,
            "product": product, "city": city, "founded": R.randint(1890, 2012),
            "ceo": namer.person(), "employees": R.randrange(150, 90_000, 50), "y0": y1 - 1, "y1": y1,
            "r0": r0, "r1": r1, "up": up, "reason": R.choice(REV_UP if up else REV_DOWN),
            "ni": round(r1 * R.uniform(0.02, 0.18), 1), "rel": []})
    for i in range(n(20)):
        co = W["company"][i % len(W["company"])]
        est = round(R.uniform(0.2, 4.5), 2)
        beat = R.random() < 0.55
        eps = round(est * (1 + (R.uniform(0.03, 0.3) if beat else -R.uniform(0.03, 0.3))), 2)
        W["earnings"].append({
            "kind": "earnings", "name": f"{co['name']} earnings", "company": co,
            "quarter": R.choice(QUARTERS), "year": co["y1"], "eps": eps, "est": est, "beat": beat,
            "move": round(R.uniform(1.0, 14.0), 1), "raise": R.random() < 0.5,
            "guide": round(co["r1"] * R.uniform(1.0, 1.2), 1), "cite": R.choice(GUIDANCE_CITES),
            "rel": [co]})
        co["rel"].append(W["earnings"][-1])
    for _ in range(n(14)):
        country = R.choice(countries)
        old = R.randrange(50, 900, 25) / 100
        hike = R.random() < 0.5
        new = round(old + (R.choice([0.25, 0.5, 0.75]) * (1 if hike else -1)), 2)
        if new <= 0:
            new, hike = round(old + 0.25, 2), True
        infl = round(R.uniform(2.4, 9.5) if hike else R.uniform(0.2, 1.8), 1)
        W["rates"].append({
            "kind": "rates", "name": R.choice([f"Central Bank of {country}", f"{country} Reserve Bank",
                                               f"National Bank of {country}"]),
            "country": country, "old": old, "new": new, "hike": hike, "infl": infl,
            "month": R.choice(MONTHS), "year": R.randint(2015, 2024),
            "currency": f"{country} {R.choice(['crown', 'mark', 'florin', 'thaler', 'dinar'])}",
            "fx": round(R.uniform(0.3, 3.5), 1), "next": R.choice(MONTHS), "rel": []})
    for i in range(n(14)):
        a, t = R.sample(W["company"], 2)
        W["merger"].append({
            "kind": "merger", "name": f"{a['name']} deal", "acquirer": a, "target": t,
            "price": round(t["r1"] * R.uniform(0.8, 3.5), 1), "premium": R.randint(12, 55),
            "why": R.choice(DEAL_RATIONALES), "risk": R.choice(DEAL_RISKS),
            "quarter": R.choice(QUARTERS), "year": t["y1"] + 1, "rel": [a, t]})
        a["rel"].append(W["merger"][-1])
    for _ in range(n(12)):
        co = R.choice(W["company"])
        up = R.random() < 0.5
        W["market"].append({
            "kind": "market", "name": f"{namer.plain(['ex', 'ora', 'an'])} {R.choice([100, 200, 50, 300])} index",
            "up": up, "pct": round(R.uniform(0.3, 4.8), 1), "day": R.choice(WEEKDAYS),
            "level": R.randrange(1200, 40_000, 1), "reason": R.choice(MARKET_REASONS),
            "company": co, "co_move": round(R.uniform(2.0, 12.0), 1),
            "gold": round(R.uniform(1200, 2600), 1), "rel": [co]})
    return W


# ----------------------------------------------------------------------------------------------
# Facts: sentence variants + questions answerable from them
# ----------------------------------------------------------------------------------------------
def Q(q: str, a, attr: str, tag: str = "fact", why: str | None = None, claim: str | None = None,
      needs: tuple[str, ...] = ()) -> dict:
    """One question about a fact. attr names the distractor pool; tag says what kind of question;
    needs lists other fact keys of the same record that must also be rendered to answer it."""
    return {"q": q, "a": str(a), "attr": attr, "tag": tag, "why": why, "claim": claim, "needs": needs}


def F(key: str, sents: list[str], qas: list[dict]) -> dict:
    return {"key": key, "sents": sents, "qas": qas}


def facts_city(c: dict) -> list[dict]:
    n, co, rv = c["name"], c["country"], c["river"]["name"]
    winter = "cold and snowy" if c["elev"] > 600 else "mild and wet"
    return [
        F("identity", [f"{n} is a city in {co} on the banks of the {rv} River.",
                       f"Located in the {c['region']} of {co}, {n} lies along the {rv} River.",
                       f"The city of {n} stands on the {rv} River in {co}."],
          [Q(f"In which country is {n} located?", co, "country", claim=f"{n} is located in {{}}"),
           Q(f"Which river flows through {n}?", f"the {rv} River", "river_full",
             claim=f"{n} lies on {{}}")]),
        F("founded", [f"{n} was founded in {c['founded']} as {c['origin']}.",
                      f"Historians date the founding of {n} to {c['founded']}, when it began as {c['origin']}."],
          [Q(f"When was {n} founded?", c["founded"], "year", claim=f"{n} was founded in {{}}"),
           Q(f"What was {n} when it was first founded?", c["origin"], "origin")]),
        F("population", [f"Today {n} has about {c['pop']:,} inhabitants.",
                         f"Roughly {c['pop']:,} people live in {n} today."],
          [Q(f"About how many people live in {n}?", f"{c['pop']:,}", "num")]),
        F("industry", [f"Because {c['reason']}, {n} became known for {c['industry']}.",
                       f"{n} became famous for {c['industry']}, because {c['reason']}.",
                       f"{cap(c['reason'])}; therefore {n} developed a strong tradition of {c['industry']}."],
          [Q(f"What is {n} known for?", c["industry"], "industry", claim=f"{n} is known for {{}}"),
           Q(f"Why did {n} become known for {c['industry']}?", c["reason"], "reason", "why")]),
        F("elevation", [f"{n} sits {c['elev']} metres above sea level, so its winters are {winter}.",
                        f"Because {n} lies {c['elev']} metres above sea level, its winters are {winter}."],
          [Q(f"How high above sea level is {n}?", f"{c['elev']} metres", "num"),
           Q(f"What are winters like in {n}?", winter, "winter", "why")]),
        F("setback", [f"However, {c['setback']} in {c['setback_year']} slowed the growth of {n} for several decades.",
                      f"{n} grew quickly until {c['setback_year']}; however, {c['setback']} then drove many families away."],
          [Q(f"What slowed the growth of {n}?", c["setback"], "setback", "why"),
           Q(f"In which year did {c['setback']} strike {n}?", c["setback_year"], "year")]),
        F("landmark", [f"The best-known landmark in {n} is the {c['landmark']}, completed in {c['landmark_year']}.",
                       f"Visitors to {n} usually start at the {c['landmark']}, which was finished in {c['landmark_year']}."],
          [Q(f"What is the best-known landmark in {n}?", f"the {c['landmark']}", "landmark"),
           Q(f"When was the {c['landmark']} in {n} completed?", c["landmark_year"], "year")]),
    ]


def facts_river(r: dict) -> list[dict]:
    n = r["name"]
    fish, fish_fact = r["fish"]
    return [
        F("identity", [f"The {n} River is about {r['length']:,} kilometres long and rises in the {r['mountains']} Mountains.",
                       f"Rising in the {r['mountains']} Mountains, the {n} River runs for some {r['length']:,} kilometres."],
          [Q(f"How long is the {n} River?", f"{r['length']:,} kilometres", "num"),
           Q(f"Where does the {n} River rise?", f"in the {r['mountains']} Mountains", "mountains_full",
             claim=f"The {n} River rises {{}}")]),
        F("mouth", [f"After crossing {r['country']}, the {n} empties into the {r['sea']} Sea.",
                    f"The {n} River flows into the {r['sea']} Sea."],
          [Q(f"Into which sea does the {n} River flow?", f"the {r['sea']} Sea", "sea_full",
             claim=f"The {n} River flows into {{}}")]),
        F("fish", [f"The {n} is home to {fish}, which {fish_fact}.",
                   f"Anglers on the {n} River often catch {fish}; these fish {fish_fact}."],
          [Q(f"Which fish live in the {n} River?", fish, "fish")]),
        F("dam", [f"Because the {n} flooded often, engineers built the {r['dam']} Dam in {r['dam_year']}; therefore the valley below has rarely flooded since.",
                  f"The {r['dam']} Dam was built across the {n} in {r['dam_year']} because the river flooded almost every spring."],
          [Q(f"Why was the {r['dam']} Dam built?", "because the river flooded often", "dam_why", "why"),
           Q(f"When was the {r['dam']} Dam built?", r["dam_year"], "year")]),
        F("navigation", [f"However, {r['obstacle']} make the upper {n} impossible to navigate by boat.",
                         f"Boats cannot travel on the upper {n} River, because of {r['obstacle']}."],
          [Q(f"What prevents boats from travelling on the upper {n}?", r["obstacle"], "obstacle", "why")]),
    ]


def facts_scientist(s: dict) -> list[dict]:
    n, c = s["name"], s["city"]["name"]
    last = n.split()[-1]
    return [
        F("identity", [f"{n} was {art(s['field'])} born in {c} in {s['born']}.",
                       f"Born in {c} in {s['born']}, {n} became one of the best-known {s['field']}s of the age."],
          [Q(f"Where was {n} born?", c, "city", claim=f"{n} was born in {{}}"),
           Q(f"In which year was {n} born?", s["born"], "year"),
           Q(f"What was {poss(n)} profession?", art(s["field"]), "field", claim=f"{n} worked as {{}}")]),
        F("discovery", [f"In {s['disc_year']}, {n} discovered {s['discovery']} while working at the University of {s['univ']}.",
                        f"{n} is remembered for discovering {s['discovery']} in {s['disc_year']} at the University of {s['univ']}."],
          [Q(f"What did {n} discover?", s["discovery"], "discovery"),
           Q(f"When did {n} make the discovery?", s["disc_year"], "year"),
           Q(f"At which university was {n} working at the time of the discovery?",
             f"the University of {s['univ']}", "univ")]),
        F("method", [f"Because {last} {s['method']}, the result was accepted quickly by other researchers.",
                     f"Other researchers accepted {poss(last)} result quickly, because {last} {s['method']}."],
          [Q(f"Why was {poss(last)} result accepted quickly?", f"because {last} {s['method']}", "method", "why")]),
        F("award", [f"{n} received the {s['award']} Medal in {s['disc_year'] + 6}; however, the discovery was put to practical use only decades later.",
                    f"Six years after the discovery, {n} was awarded the {s['award']} Medal."],
          [Q(f"Which medal did {n} receive?", f"the {s['award']} Medal", "award"),
           Q(f"In which year did {n} receive the {s['award']} Medal?", s["disc_year"] + 6, "year",
             "num", why=f"{n} made the discovery in {s['disc_year']} and received the medal six years later; {s['disc_year']} + 6 = {s['disc_year'] + 6}.",
             needs=("discovery",))]),
    ]


def facts_species(s: dict) -> list[dict]:
    n = s["name"]
    N = cap(n)
    return [
        F("identity", [f"The {n} is {art(s['class'])} that lives in {s['habitat']} of {s['country']}.",
                       f"Found only in {s['habitat']} of {s['country']}, the {n} is a small {s['class']}."],
          [Q(f"Where does the {n} live?", s["habitat"], "habitat", claim=f"The {n} lives in {{}}"),
           Q(f"What kind of animal is the {n}?", art(s["class"]), "class")]),
        F("diet", [f"The {n} feeds mainly on {s['diet']}.",
                   f"Field studies show that the diet of the {n} consists mostly of {s['diet']}."],
          [Q(f"What does the {n} mainly eat?", s["diet"], "diet", claim=f"The {n} mainly eats {{}}")]),
        F("lifespan", [f"In the wild, the {n} lives for about {s['lifespan']} years.",
                       f"A wild {N} can reach an age of roughly {s['lifespan']} years."],
          [Q(f"How long does the {n} live in the wild?", f"{s['lifespan']} years", "num")]),
        F("adaptation", [f"Because {s['adapt_why']}, the {n} has {s['adapt']}.",
                         f"The {n} has {s['adapt']}, because {s['adapt_why']}."],
          [Q(f"Why does the {n} have {s['adapt']}?", f"because {s['adapt_why']}", "adapt_why", "why"),
           Q(f"Which feature helps the {n} survive?", s["adapt"], "adapt")]),
        F("threat", [f"However, {s['threat']} has reduced its numbers by {s['decline']}% since {s['since']}, so the {n} is now protected.",
                     f"Numbers of the {n} have fallen by {s['decline']}% since {s['since']}, mainly because of {s['threat']}."],
          [Q(f"What has reduced the numbers of the {n}?", s["threat"], "threat", "why"),
           Q(f"By how much have numbers of the {n} fallen since {s['since']}?", f"{s['decline']}%", "num")]),
    ]


def facts_mineral(m: dict) -> list[dict]:
    n = m["name"]
    scratch = "can scratch ordinary glass" if m["hardness"] >= 5.5 else "is easily scratched by a steel knife"
    yn = "yes" if m["hardness"] >= 5.5 else "no"
    return [
        F("identity", [f"{n} is {art(m['color'])} mineral first described in {m['country']} in {m['year']}.",
                       f"First described in {m['country']} in {m['year']}, {n} is {art(m['color'])} mineral."],
          [Q(f"What colour is {n}?", m["color"], "color", claim=f"{n} is {{}}"),
           Q(f"In which country was {n} first described?", m["country"], "country")]),
        F("hardness", [f"{n} has a hardness of {m['hardness']} on the Mohs scale, so it {scratch}.",
                       f"With a Mohs hardness of {m['hardness']}, {n} {scratch}."],
          [Q(f"What is the Mohs hardness of {n}?", m["hardness"], "num"),
           Q(f"Can {n} scratch ordinary glass?", yn, "yn", "why")]),
        F("melting", [f"{n} melts at about {m['melt']:,} degrees Celsius.",
                      f"Heated to roughly {m['melt']:,} degrees Celsius, {n} begins to melt."],
          [Q(f"At what temperature does {n} melt?", f"{m['melt']:,} degrees Celsius", "num")]),
        F("use", [f"Because it {m['prop']}, {n} is used to make {m['use']}.",
                  f"{n} is used to make {m['use']}, because it {m['prop']}."],
          [Q(f"What is {n} used to make?", m["use"], "use", claim=f"{n} is used to make {{}}"),
           Q(f"Why is {n} used to make {m['use']}?", f"because it {m['prop']}", "prop", "why")]),
    ]


def facts_treaty(t: dict) -> list[dict]:
    n = t["name"]
    return [
        F("identity", [f"The {n} was signed in {t['year']} by {t['a']} and {t['b']}.",
                       f"In {t['year']}, {t['a']} and {t['b']} signed the {n}."],
          [Q(f"When was the {n} signed?", t["year"], "year", claim=f"The {n} was signed in {{}}"),
           Q(f"Which country signed the {n} together with {t['a']}?", t["b"], "country")]),
        F("cause", [f"{t['a']} and {t['b']} negotiated the {n} because {t['cause']}.",
                    f"The {n} was needed because {t['cause']}."],
          [Q(f"Why was the {n} negotiated?", f"because {t['cause']}", "treaty_cause", "why")]),
        F("result", [f"Under the {n}, {t['result']}.",
                     f"As a result of the {n}, {t['result']}."],
          [Q(f"What was one result of the {n}?", t["result"], "treaty_result")]),
        F("withdraw", [f"However, {t['b']} withdrew from the {n} in {t['withdraw']}.",
                       f"The {n} lasted until {t['withdraw']}, when {t['b']} withdrew from it."],
          [Q(f"When did {t['b']} withdraw from the {n}?", t["withdraw"], "year"),
           Q(f"How many years after signing did {t['b']} withdraw from the {n}?",
             f"{t['withdraw'] - t['year']} years", "num", "num",
             why=f"The treaty was signed in {t['year']} and {t['b']} withdrew in {t['withdraw']}; {t['withdraw']} - {t['year']} = {t['withdraw'] - t['year']}.",
             needs=("identity",))]),
    ]


def facts_dish(d: dict) -> list[dict]:
    n, c = d["name"], d["city"]["name"]
    return [
        F("identity", [f"{n} is a traditional dish from {c}, made mainly with {d['ingredient']}.",
                       f"The main ingredient of {n}, a traditional dish of {c}, is {d['ingredient']}."],
          [Q(f"What is the main ingredient of {n}?", d["ingredient"], "ingredient",
             claim=f"{n} is made mainly with {{}}")]),
        F("time", [f"Cooks prepare {n} for about {d['minutes']} minutes, therefore it is usually started early in the day.",
                   f"Because {n} takes about {d['minutes']} minutes to cook, families start it early in the day."],
          [Q(f"How long does it take to cook {n}?", f"{d['minutes']} minutes", "num")]),
        F("custom", [f"{n} is traditionally served {d['occasion']}, because {d['occ_why']}.",
                     f"Because {d['occ_why']}, {n} is traditionally served {d['occasion']}."],
          [Q(f"When is {n} traditionally served?", d["occasion"], "occasion"),
           Q(f"Why is {n} served {d['occasion']}?", f"because {d['occ_why']}", "occ_why", "why")]),
        F("history", [f"The recipe for {n} first appears in a cookbook from the {d['century']}th century.",
                      f"Written recipes for {n} date back to the {d['century']}th century."],
          [Q(f"In which century does the recipe for {n} first appear?", f"the {d['century']}th century", "century")]),
    ]


def facts_gene(g: dict) -> list[dict]:
    n = g["name"]
    out = [
        F("identity", [f"The {n} gene is located on chromosome {g['chrom']} and encodes {g['protein']}.",
                       f"Located on chromosome {g['chrom']}, the {n} gene encodes {g['protein']}."],
          [Q(f"On which chromosome is the {n} gene located?", f"chromosome {g['chrom']}", "chrom",
             claim=f"The {n} gene is located on {{}}"),
           Q(f"What does the {n} gene encode?", g["protein"], "protein", claim=f"The {n} gene encodes {{}}")]),
        F("expression", [f"{n} is expressed mainly in the {g['tissue']}, where its protein {g['function']}.",
                         f"In the {g['tissue']}, where {n} is most active, its protein {g['function']}."],
          [Q(f"In which tissue is {n} mainly expressed?", f"the {g['tissue']}", "tissue"),
           Q(f"What does the protein encoded by {n} do?", g["function"], "function")]),
        F("knockout", [f"In knockout mice lacking {n}, researchers observed {g['phenotype']}.",
                       f"Mice without a working copy of {n} develop {g['phenotype']}."],
          [Q(f"What did researchers observe in mice lacking {n}?", g["phenotype"], "phenotype")]),
    ]
    if g["disease"] is not None:
        d = g["disease"]["name"]
        out.append(F("mutation", [f"Mutations in {n} {g['mutation']}; therefore carriers have a higher risk of {d}.",
                                  f"Because mutations in {n} {g['mutation']}, carriers are more likely to develop {d}."],
                     [Q(f"Which disease is linked to mutations in {n}?", d, "disease"),
                      Q(f"What do mutations in {n} do to the protein?", g["mutation"], "mutation")]))
    return out


def facts_disease(d: dict) -> list[dict]:
    n = d["name"]
    sym = join_list(d["symptoms"])
    out = [
        F("identity", [f"{n} is {art(d['course'])} disorder that mainly affects the {d['organ']}.",
                       f"{n}, {art(d['course'])} disease of the {d['organ']}, usually begins around the age of {d['onset']}."],
          [Q(f"Which organ does {n} mainly affect?", f"the {d['organ']}", "organ",
             claim=f"{n} mainly affects {{}}")]),
        F("symptoms", [f"Patients with {n} typically present with {sym}.",
                       f"The typical symptoms of {n} are {sym}."],
          [Q(f"What are the typical symptoms of {n}?", sym, "symptoms")]),
        F("prevalence", [f"{n} affects about {d['prev']} in every 100,000 people.",
                         f"Surveys suggest that {d['prev']} in every 100,000 people have {n}."],
          [Q(f"How common is {n}?", f"about {d['prev']} in every 100,000 people", "num")]),
    ]
    if d["gene"] is not None:
        out.append(F("cause", [f"{n} is caused by mutations in the {d['gene']['name']} gene.",
                               f"Inherited mutations in the {d['gene']['name']} gene cause {n}."],
                     [Q(f"Mutations in which gene cause {n}?", d["gene"]["name"], "gene",
                        claim=f"{n} is caused by mutations in {{}}")]))
    else:
        out.append(F("cause", [f"{n} is caused by infection with the {d['pathogen']}.",
                               f"Infection with the {d['pathogen']} causes {n}."],
                     [Q(f"What causes {n}?", f"the {d['pathogen']}", "pathogen")]))
    if d["drug"] is not None:
        dr = d["drug"]
        out.append(F("treatment", [f"The first-line treatment for {n} is {dr['name']}, {art(dr['class'])}.",
                                   f"Doctors usually treat {n} with {dr['name']}, {art(dr['class'])}."],
                     [Q(f"What is the first-line treatment for {n}?", dr["name"], "drug")]))
    return out


def facts_drug(d: dict) -> list[dict]:
    n, g, dz = d["name"], d["gene"]["name"], d["disease"]["name"]
    once = d["hl"] >= 20
    return [
        F("identity", [f"{n} is {art(d['class'])} used to treat {dz}.",
                       f"Approved for {dz}, {n} belongs to the {d['class']} drug class."],
          [Q(f"What type of drug is {n}?", art(d["class"]), "drug_class", claim=f"{n} is {{}}"),
           Q(f"Which disease is {n} used to treat?", dz, "disease", claim=f"{n} is used to treat {{}}")]),
        F("mechanism", [f"{n} works by {d['verb']} {g}, a protein that {d['gene']['function']}.",
                        f"The target of {n} is {g}; the drug works by {d['verb']} this protein."],
          [Q(f"Which protein does {n} target?", g, "gene", claim=f"{n} targets {{}}")]),
        F("dose", [f"The usual adult dose of {n} is {d['dose']} mg taken {d['freq']}.",
                   f"Adults normally take {d['dose']} mg of {n} {d['freq']}."],
          [Q(f"What is the usual adult dose of {n}?", f"{d['dose']} mg", "num"),
           Q(f"How often is {n} taken?", d["freq"], "freq")]),
        F("halflife", [f"{n} has a half-life of about {d['hl']} hours, therefore it "
                       + ("can be taken once a day." if once else "must be taken more than once a day."),
                       f"Because its half-life is about {d['hl']} hours, {n} "
                       + ("only needs to be taken once a day." if once else "has to be taken several times a day.")],
          [Q(f"What is the half-life of {n}?", f"{d['hl']} hours", "num"),
           Q(f"Can {n} be taken only once a day?", "yes" if once else "no", "yn", "why")]),
        F("side", [f"However, about {d['side_pct']}% of patients taking {n} report {d['side']}.",
                   f"The most common side effect of {n} is {d['side']}, reported by {d['side_pct']}% of patients."],
          [Q(f"What is a common side effect of {n}?", d["side"], "side"),
           Q(f"What share of patients taking {n} report {d['side']}?", f"{d['side_pct']}%", "num")]),
        F("route", [f"{n} is given {d['route']}.", f"Patients receive {n} {d['route']}."],
          [Q(f"How is {n} given?", d["route"], "route")]),
    ]


def facts_trial(t: dict) -> list[dict]:
    dr, dz, ep = t["drug"]["name"], t["disease"]["name"], t["endpoint"]
    o = t["outcome"]
    if o == "yes":
        res = [f"Patients receiving {dr} showed a {t['effect']}% reduction in {ep} compared with placebo (p = {t['p']}).",
               f"Compared with placebo, {dr} lowered {ep} by {t['effect']}% (p = {t['p']})."]
        concl = f"The investigators therefore concluded that {dr} is an effective option for {dz}."
    elif o == "no":
        res = [f"There was no significant difference in {ep} between the {dr} and placebo groups (p = {t['p']}).",
               f"{dr} did not change {ep} more than placebo did (p = {t['p']})."]
        concl = f"The investigators therefore concluded that {dr} should not be recommended for {dz}."
    else:
        res = [f"{dr} reduced {ep} by {t['effect']}% in patients over 60; however, the effect in the whole group was not significant (p = {t['p']}).",
               f"In the whole group {dr} did not significantly change {ep} (p = {t['p']}), although patients over 60 improved by {t['effect']}%."]
        concl = f"The investigators called for a larger study before {dr} can be recommended for {dz}."
    return [
        F("identity", [f"A randomised trial enrolled {t['n']:,} patients with {dz} to compare {dr} with placebo over {t['weeks']} weeks.",
                       f"In a {t['weeks']}-week placebo-controlled trial, {t['n']:,} patients with {dz} received either {dr} or placebo."],
          [Q(f"How many patients were enrolled in the trial of {dr}?", f"{t['n']:,}", "num"),
           Q(f"How long did the trial of {dr} last?", f"{t['weeks']} weeks", "num")]),
        F("result", res,
          [Q(f"Did {dr} reduce {ep} in patients with {dz}?", o, "yn3", "why"),
           *([Q(f"By how much did {dr} reduce {ep}?", f"{t['effect']}%", "num")] if o != "no" else [])]),
        F("conclusion", [concl], []),
        F("adverse", [f"The most common adverse event in the trial was {t['ae']}, reported by {t['ae_pct']}% of participants.",
                      f"Adverse events were mostly mild; {t['ae']} affected {t['ae_pct']}% of participants."],
          [Q(f"What was the most common adverse event in the trial of {dr}?", t["ae"], "ae")]),
    ]


def facts_company(c: dict) -> list[dict]:
    n = c["name"]
    diff = round(c["r1"] - c["r0"], 1)
    pct = round(100 * diff / c["r0"], 1)
    verb = "rose" if c["up"] else "fell"
    margin = round(100 * c["ni"] / c["r1"], 1)
    return [
        F("identity", [f"{n} is {art(c['sector'])} company headquartered in {c['city']['name']}.",
                       f"Headquartered in {c['city']['name']}, {n} operates in the {c['sector']} industry."],
          [Q(f"In which city is {n} headquartered?", c["city"]["name"], "city",
             claim=f"{n} is headquartered in {{}}"),
           Q(f"In which industry does {n} operate?", c["sector"], "sector", claim=f"{n} operates in the {{}} industry")]),
        F("leader", [f"{n} was founded in {c['founded']} and is led by chief executive {c['ceo']}.",
                     f"Chief executive {c['ceo']} runs {n}, which was founded in {c['founded']}."],
          [Q(f"Who is the chief executive of {n}?", c["ceo"], "person"),
           Q(f"When was {n} founded?", c["founded"], "year")]),
        F("revenue", [f"{n} reported revenue of ${money(c['r1'])} million in {c['y1']}, compared with ${money(c['r0'])} million in {c['y0']}.",
                      f"Revenue at {n} {verb} from ${money(c['r0'])} million in {c['y0']} to ${money(c['r1'])} million in {c['y1']}."],
          [Q(f"What was {poss(n)} revenue in {c['y1']}?", f"${money(c['r1'])} million", "num"),
           Q(f"What was {poss(n)} revenue in {c['y0']}?", f"${money(c['r0'])} million", "num"),
           Q(f"By how much did {poss(n)} revenue change from {c['y0']} to {c['y1']}, in millions of dollars?",
             f"{diff:,.1f}", "num", "num",
             why=f"Revenue was {money(c['r1'])} million in {c['y1']} and {money(c['r0'])} million in {c['y0']}. {money(c['r1'])} - {money(c['r0'])} = {diff:,.1f}."),
           Q(f"What was the percentage change in {poss(n)} revenue from {c['y0']} to {c['y1']}?",
             f"{pct}%", "num", "num",
             why=f"The change is {money(c['r1'])} - {money(c['r0'])} = {diff:,.1f} million, and {diff:,.1f} / {money(c['r0'])} = {pct / 100:.3f}, or {pct}%.")]),
        F("reason", [f"{poss(n)} revenue {verb} because {c['reason']}.",
                     f"Managers at {n} said that sales {verb} because {c['reason']}."],
          [Q(f"Why did {poss(n)} revenue {'rise' if c['up'] else 'fall'}?", f"because {c['reason']}",
             "rev_reason", "why")]),
        F("income", [f"{n} earned a net income of ${money(c['ni'])} million in {c['y1']}.",
                     f"In {c['y1']}, net income at {n} came to ${money(c['ni'])} million."],
          [Q(f"What was {poss(n)} net income in {c['y1']}?", f"${money(c['ni'])} million", "num"),
           *([Q(f"What was {poss(n)} net profit margin in {c['y1']}?", f"{margin}%", "num", "num",
                why=f"Net income was {money(c['ni'])} million on revenue of {money(c['r1'])} million; {money(c['ni'])} / {money(c['r1'])} = {margin}%.",
                needs=("revenue",))])]),
        F("staff", [f"{n} employs about {c['employees']:,} people, and its best-selling product is {c['product']}.",
                    f"With about {c['employees']:,} employees, {n} earns most of its money from {c['product']}."],
          [Q(f"How many people does {n} employ?", f"{c['employees']:,}", "num"),
           Q(f"What is {poss(n)} main product?", c["product"], "product")]),
    ]


def facts_earnings(e: dict) -> list[dict]:
    co = e["company"]["name"]
    rel = "above" if e["beat"] else "below"
    mv = "rose" if e["beat"] else "fell"
    return [
        F("identity", [f"{co} reported {e['quarter']} {e['year']} earnings of ${e['eps']:.2f} per share, {rel} the analyst estimate of ${e['est']:.2f}.",
                       f"For the {e['quarter']} of {e['year']}, {co} earned ${e['eps']:.2f} per share, while analysts had expected ${e['est']:.2f}."],
          [Q(f"What were {poss(co)} earnings per share in the {e['quarter']} of {e['year']}?", f"${e['eps']:.2f}", "num"),
           Q(f"Did {co} beat the analyst estimate in the {e['quarter']} of {e['year']}?",
             "yes" if e["beat"] else "no", "yn", "why")]),
        F("shares", [f"As a result, shares of {co} {mv} {e['move']}% in after-hours trading.",
                     f"Shares of {co} {mv} {e['move']}% after the results were published."],
          [Q(f"How did shares of {co} react to the {e['quarter']} results?", f"they {mv} {e['move']}%", "share_move", "why")]),
        F("guidance", [f"However, {co} {'raised' if e['raise'] else 'cut'} its full-year revenue guidance to ${money(e['guide'])} million, citing {e['cite']}.",
                       f"{co} {'raised' if e['raise'] else 'lowered'} its full-year revenue forecast to ${money(e['guide'])} million because of {e['cite']}."],
          [Q(f"What is {poss(co)} new full-year revenue guidance?", f"${money(e['guide'])} million", "num"),
           Q(f"What reason did {co} give for changing its guidance?", e["cite"], "cite", "why")]),
    ]


def facts_rates(r: dict) -> list[dict]:
    n = r["name"]
    verb = "raised" if r["hike"] else "cut"
    bp = int(round(abs(r["new"] - r["old"]) * 100))
    return [
        F("identity", [f"The {n} {verb} its benchmark interest rate from {r['old']:.2f}% to {r['new']:.2f}% in {r['month']} {r['year']}.",
                       f"In {r['month']} {r['year']}, the {n} {verb} its main policy rate to {r['new']:.2f}% from {r['old']:.2f}%."],
          [Q(f"What is the {poss(n)} new benchmark rate?", f"{r['new']:.2f}%", "num",
             claim=f"The {poss(n)} benchmark rate is now {{}}"),
           Q(f"By how many basis points did the {n} change its rate?", f"{bp} basis points", "num", "num",
             why=f"The rate moved from {r['old']:.2f}% to {r['new']:.2f}%, a change of {abs(r['new'] - r['old']):.2f} percentage points, which is {bp} basis points.")]),
        F("reason", [f"The {n} acted because inflation had {'reached' if r['hike'] else 'fallen to'} {r['infl']}%, {'above' if r['hike'] else 'below'} its 2% target.",
                     f"Because inflation stood at {r['infl']}%, {'well above' if r['hike'] else 'below'} the 2% target, the {n} decided to {'tighten' if r['hike'] else 'ease'} policy."],
          [Q(f"Why did the {n} {'raise' if r['hike'] else 'cut'} rates?",
             f"because inflation was {'above' if r['hike'] else 'below'} its 2% target", "rate_why", "why"),
           Q(f"What was inflation when the {n} changed its rate?", f"{r['infl']}%", "num")]),
        F("currency", [f"Following the decision, the {r['currency']} {'strengthened' if r['hike'] else 'weakened'} by {r['fx']}% against the dollar.",
                       f"The {r['currency']} {'gained' if r['hike'] else 'lost'} {r['fx']}% against the dollar after the announcement."],
          [Q(f"How did the {r['currency']} react to the decision?",
             f"it {'strengthened' if r['hike'] else 'weakened'} by {r['fx']}%", "fx_move")]),
        F("outlook", [f"However, most economists expect the {n} to keep rates unchanged at its next meeting in {r['next']}.",
                      f"Analysts expect the {n} to pause at its {r['next']} meeting."],
          [Q(f"When is the next meeting of the {n}?", r["next"], "month")]),
    ]


def facts_merger(m: dict) -> list[dict]:
    a, t = m["acquirer"]["name"], m["target"]["name"]
    return [
        F("identity", [f"{a} agreed to acquire {t} for ${money(m['price'])} million in cash.",
                       f"In a ${money(m['price'])} million cash deal, {a} will buy {t}."],
          [Q(f"Which company agreed to acquire {t}?", a, "company", claim=f"{t} is being acquired by {{}}"),
           Q(f"How much is {a} paying for {t}?", f"${money(m['price'])} million", "num")]),
        F("premium", [f"The offer values {t} at a {m['premium']}% premium to its last closing share price.",
                      f"{poss(a)} offer is {m['premium']}% above the last closing price of {t} shares."],
          [Q(f"What premium does the offer for {t} represent?", f"{m['premium']}%", "num")]),
        F("rationale", [f"{a} said the deal makes sense because {m['why']}.",
                        f"According to {a}, the purchase of {t} is attractive because {m['why']}."],
          [Q(f"Why does {a} want to buy {t}?", f"because {m['why']}", "deal_why", "why")]),
        F("closing", [f"The transaction is expected to close in the {m['quarter']} of {m['year']}; however, {m['risk']}.",
                      f"{a} expects to complete the purchase of {t} in the {m['quarter']} of {m['year']}, although {m['risk']}."],
          [Q(f"When is the acquisition of {t} expected to close?", f"in the {m['quarter']} of {m['year']}", "close"),
           Q(f"What risk could delay the acquisition of {t}?", m["risk"], "risk", "why")]),
    ]


def facts_market(m: dict) -> list[dict]:
    n, co = m["name"], m["company"]["name"]
    verb = "rose" if m["up"] else "fell"
    return [
        F("identity", [f"The {n} {verb} {m['pct']}% on {m['day']} to close at {m['level']:,} points.",
                       f"On {m['day']}, the {n} closed {m['pct']}% {'higher' if m['up'] else 'lower'} at {m['level']:,} points."],
          [Q(f"How much did the {n} move on {m['day']}?", f"it {verb} {m['pct']}%", "index_move",
             claim=f"On {m['day']} the {n} {{}}"),
           Q(f"At what level did the {n} close on {m['day']}?", f"{m['level']:,} points", "num")]),
        F("reason", [f"Traders said the move came because {m['reason']}.",
                     f"The {n} moved because {m['reason']}, according to traders."],
          [Q(f"Why did the {n} move on {m['day']}?", f"because {m['reason']}", "market_reason", "why")]),
        F("leader", [f"Shares of {co} led the {'gains' if m['up'] else 'losses'}, {'rising' if m['up'] else 'falling'} {m['co_move']}%.",
                     f"{co} was the biggest {'gainer' if m['up'] else 'loser'} in the {n}, {'up' if m['up'] else 'down'} {m['co_move']}%."],
          [Q(f"Which company led the {n} on {m['day']}?", co, "company")]),
        F("gold", [f"Gold {'slipped' if m['up'] else 'climbed'} to ${money(m['gold'])} an ounce as investors {'took more risk' if m['up'] else 'looked for safety'}.",
                   f"Meanwhile, gold {'eased' if m['up'] else 'rose'} to ${money(m['gold'])} an ounce."],
          [Q(f"What was the price of gold on the day the {n} {verb}?", f"${money(m['gold'])} an ounce", "num")]),
    ]


FACTS = {"city": facts_city, "river": facts_river, "scientist": facts_scientist,
         "species": facts_species, "mineral": facts_mineral, "treaty": facts_treaty,
         "dish": facts_dish, "gene": facts_gene, "disease": facts_disease, "drug": facts_drug,
         "trial": facts_trial, "company": facts_company, "earnings": facts_earnings,
         "rates": facts_rates, "merger": facts_merger, "market": facts_market}


# ----------------------------------------------------------------------------------------------
# Distractors
# ----------------------------------------------------------------------------------------------
NUM_RE = re.compile(r"\d[\d,]*(?:\.\d+)?")


def build_pools(worlds: list[dict]) -> dict[str, list[str]]:
    """attr -> answers seen across all records (insertion-ordered, unique)."""
    pools: dict[str, dict[str, None]] = {}
    for W in worlds:
        for kind in FACTS:
            for rec in W[kind]:
                for f in FACTS[kind](rec):
                    for qa in f["qas"]:
                        pools.setdefault(qa["attr"], {})[qa["a"]] = None
    return {k: list(v) for k, v in pools.items()}


def perturb(ans: str, rng: random.Random, k: int) -> list[str]:
    """Numeric distractors: same surface format as `ans`, different first number."""
    m = NUM_RE.search(ans)
    if not m:
        return []
    tok = m.group()
    val = float(tok.replace(",", ""))
    dec = len(tok.split(".")[1]) if "." in tok else 0
    comma = "," in tok
    is_year = dec == 0 and not comma and len(tok) == 4 and 1000 <= val <= 2100
    out: list[str] = []
    for _ in range(200):
        if len(out) >= k:
            break
        if is_year:
            v = val + rng.choice([-1, 1]) * rng.randint(2, 40)
        elif dec == 0 and val < 30:
            v = val + rng.choice([-1, 1]) * rng.randint(1, max(2, int(val * 0.6) + 1))
            if v <= 0:
                continue
        else:
            v = val * rng.choice([0.5, 0.6, 0.75, 0.8, 1.25, 1.4, 1.5, 2.0])
        if dec:
            txt = f"{v:,.{dec}f}" if comma else f"{v:.{dec}f}"
        else:
            txt = f"{int(round(v)):,}" if comma else str(int(round(v)))
        cand = ans[:m.start()] + txt + ans[m.end():]
        if cand != ans and cand not in out:
            out.append(cand)
    return out


def distractors(qa: dict, pools: dict[str, list[str]], rng: random.Random, k: int = 3) -> list[str]:
    a, attr = qa["a"], qa["attr"]
    if attr in ("num", "year"):
        return perturb(a, rng, k)
    if attr == "yn":
        return ["no" if a == "yes" else "yes"]
    if attr == "yn3":
        return [x for x in ("yes", "no", "maybe") if x != a]
    cands = [x for x in pools.get(attr, []) if x.lower() != a.lower()]
    return rng.sample(cands, min(k, len(cands)))


# ----------------------------------------------------------------------------------------------
# Paragraphs
# ----------------------------------------------------------------------------------------------
TRANSITIONS = ["Meanwhile, ", "Separately, ", "In addition, ", "At the same time, "]
_CONNECTIVES = ("However", "Because", "Therefore", "As", "Meanwhile", "Although")


def render(recs: list[dict], rng: random.Random, force: list[tuple[int, str]] = (),
           tries: int = 30):
    """Render records into one paragraph of 3-7 sentences and 60-160 words.

    Returns (text, rendered) with rendered = [(rec, fact, sentence), ...], or None when the
    records cannot fill the word range. `force` = [(record index, fact key)] must be included.
    """
    allf = [FACTS[r["kind"]](r) for r in recs]
    for _ in range(tries):
        n_total = rng.randint(max(3, len(recs)), 7)
        extra = [(i, j) for i, fs in enumerate(allf) for j in range(1, len(fs))]
        rng.shuffle(extra)
        picked = [(i, 0) for i in range(len(recs))] + extra[:max(0, n_total - len(recs))]
        for fi, fkey in force:
            fj = next((j for j, f in enumerate(allf[fi]) if f["key"] == fkey), None)
            if fi < len(recs) and fj is not None and (fi, fj) not in picked:
                picked.append((fi, fj))
        picked.sort()
        sents, rendered = [], []
        for i, j in picked:
            s = base = rng.choice(allf[i][j]["sents"])
            if i > 0 and j == 0 and rng.random() < 0.5 and s.split(" ", 1)[0].rstrip(",") not in _CONNECTIVES:
                s = rng.choice(TRANSITIONS) + lower_first(s)
            sents.append(s)
            rendered.append((recs[i], allf[i][j], base))  # evidence without the transition
        text = " ".join(sents)
        if WORDS_MIN <= n_words(text) <= WORDS_MAX:
            return text, rendered
    return None


def _keys(rendered) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for rec, f, _ in rendered:
        out.setdefault(id(rec), []).append(f["key"])
    return out


def answerable_qas(rendered) -> list[dict]:
    """Questions answerable from a rendered paragraph (each with its evidence sentence)."""
    keys = _keys(rendered)
    out = []
    for rec, f, sent in rendered:
        for qa in f["qas"]:
            if all(k in keys[id(rec)] for k in qa["needs"]):
                out.append(dict(qa, evidence=sent))
    return out + bridge_qas(rendered, keys)


def bridge_qas(rendered, keys) -> list[dict]:
    """Two-hop questions that need facts of two linked records in the same paragraph."""
    has = lambda rec, key: key in keys.get(id(rec), [])  # noqa: E731
    sent = {(id(r), f["key"]): s for r, f, s in rendered}
    out = []

    def add(q, a, attr, r1, k1, r2, k2):
        why = f"{sent[(id(r1), k1)]} {sent[(id(r2), k2)]}"
        out.append({"q": q, "a": a, "attr": attr, "tag": "bridge", "why": why, "claim": None,
                    "needs": (), "evidence": why})

    for rec, f, _ in rendered:
        k = rec["kind"]
        if f["key"] != "identity":
            continue
        if k == "scientist" and has(rec["city"], "identity"):
            add(f"In which country was {rec['name']} born?", rec["city"]["country"], "country",
                rec, "identity", rec["city"], "identity")
        if k == "city" and has(rec["river"], "mouth"):
            add(f"Into which sea does the river that flows through {rec['name']} empty?",
                f"the {rec['river']['sea']} Sea", "sea_full", rec, "identity", rec["river"], "mouth")
        if k == "dish" and has(rec["city"], "identity"):
            add(f"In which country does {rec['name']} originate?", rec["city"]["country"], "country",
                rec, "identity", rec["city"], "identity")
        if k == "treaty" and has(rec["city"], "identity"):
            add(f"Which river flows through the city that gave its name to the {rec['name']}?",
                f"the {rec['city']['river']['name']} River", "river_full", rec, "identity", rec["city"], "identity")
        if k == "drug" and has(rec["gene"], "identity") and has(rec, "mechanism"):
            add(f"On which chromosome is the gene targeted by {rec['name']} located?",
                f"chromosome {rec['gene']['chrom']}", "chrom", rec, "mechanism", rec["gene"], "identity")
        if k == "drug" and has(rec["disease"], "identity"):
            add(f"Which organ is affected by the disease that {rec['name']} treats?",
                f"the {rec['disease']['organ']}", "organ", rec, "identity", rec["disease"], "identity")
        if k == "trial" and has(rec["drug"], "identity"):
            add(f"What type of drug was compared with placebo in the trial of {rec['n']:,} patients?",
                art(rec["drug"]["class"]), "drug_class", rec, "identity", rec["drug"], "identity")
        if k == "merger" and has(rec["acquirer"], "identity"):
            add(f"In which city is the company that agreed to buy {rec['target']['name']} headquartered?",
                rec["acquirer"]["city"]["name"], "city", rec, "identity", rec["acquirer"], "identity")
        if k == "earnings" and has(rec["company"], "identity"):
            add(f"In which industry does the company that earned ${rec['eps']:.2f} per share in the {rec['quarter']} operate?",
                rec["company"]["sector"], "sector", rec, "identity", rec["company"], "identity")
    return out


def paragraph_for(primary: dict, W: dict, rng: random.Random, p_rel: float = 0.45,
                  all_rel: bool = False, force: list[tuple[int, str]] = ()):
    """Render `primary` (plus related / same-domain records when needed to fill the length)."""
    group = [primary]
    rel = [r for r in primary["rel"] if r is not primary]
    if all_rel:
        group += rel[:2]
    else:
        for r in rel:
            if len(group) < 3 and rng.random() < p_rel:
                group.append(r)
    domain_recs = [r for k in DOMAIN_KINDS[KIND_DOMAIN[primary["kind"]]] for r in W[k]]
    for _ in range(6):
        out = render(group, rng, force=[f for f in force if f[0] < len(group)])
        if out is not None:
            return out
        more = [r for r in rel if all(r is not g for g in group)] or domain_recs
        cand = rng.choice(more)
        if all(cand is not g for g in group) and len(group) < 3:
            group.append(cand)
        elif len(group) >= 3:
            group = group[:2]
    raise RuntimeError(f"cannot render a paragraph for {primary['name']}")


# ----------------------------------------------------------------------------------------------
# raw_corpus.jsonl
# ----------------------------------------------------------------------------------------------
def make_corpus(W: dict, rng: random.Random) -> list[dict]:
    rows: list[dict] = []
    seen: dict[str, None] = {}
    for domain, count in N_CORPUS.items():
        recs = [r for k in DOMAIN_KINDS[domain] for r in W[k]]
        order = list(range(len(recs)))
        rng.shuffle(order)
        i = made = 0
        while made < count:
            primary = recs[order[i % len(order)]]
            i += 1
            text, _ = paragraph_for(primary, W, rng)
            if text in seen:
                continue
            seen[text] = None
            made += 1
            rows.append({"id": f"{domain}-{made:04d}", "domain": domain, "text": text})
    return rows


# ----------------------------------------------------------------------------------------------
# synth_collection.jsonl (synthesizer-tuning collection; contexts from a second, disjoint world)
# ----------------------------------------------------------------------------------------------
# rc_name, domain (or "mixed"), dominant QA_type, secondary QA_type, primary kinds, preference
SYNTH_DATASETS = [
    ("squad_like", "general", "free-form", "multiple-choice", ["city", "river", "scientist", "mineral"], "fact"),
    ("race_like", "general", "multiple-choice", "free-form", ["species", "dish", "treaty", "city"], "fact"),
    ("hotpot_like", "general", "free-form", "free-form+CoT", ["scientist", "dish", "treaty", "city"], "bridge"),
    ("pubmedqa_like", "biomedicine", "multiple-choice", "multiple-choice+CoT", ["trial"], "yn3"),
    ("convfinqa_like", "finance", "free-form+CoT", "free-form", ["company", "rates", "earnings"], "num"),
    ("cosmos_like", "general", "multiple-choice", "multiple-choice+CoT", ["city", "species", "river", "treaty"], "why"),
    ("ecqa_like", "mixed", "multiple-choice+CoT", "multiple-choice", ["mineral", "species", "drug", "disease"], "why"),
    ("logiqa_like", "mixed", "multiple-choice+CoT", "free-form+CoT", ["gene", "drug", "company", "merger", "city", "species"], "claim"),
]
CLAIM_QUESTIONS = ["Which of the following statements is supported by the passage?",
                   "Which statement agrees with the text?",
                   "According to the passage, which of the following is true?"]
WHY_LEADS = ["The passage states: {ev}", "According to the text, {evl}", "The relevant sentence is: {ev}",
             "We are told that {evl}"]


def _prefers(qa: dict, pref: str) -> bool:
    if pref in ("yn3",):
        return qa["attr"] == pref
    if pref == "claim":
        return qa["claim"] is not None
    return qa["tag"] == pref


def _reasoning(qa: dict, rng: random.Random) -> str:
    if qa.get("why"):
        return qa["why"]
    ev = qa["evidence"]
    return rng.choice(WHY_LEADS).format(ev=ev, evl=lower_first(ev))


def format_qa(qa: dict, qa_type: str, pools, rng: random.Random, claim_mode: bool = False):
    """Render one question in a QA_type; None when it cannot be (e.g. too few options)."""
    q, a = qa["q"], qa["a"]
    if claim_mode:
        wrong = distractors(qa, pools, rng, 3)
        if not wrong:
            return None
        if qa_type.startswith("multiple-choice"):
            a = qa["claim"].format(qa["a"])
            opts = [a] + [qa["claim"].format(w) for w in wrong]
            q = rng.choice(CLAIM_QUESTIONS)
        else:
            true = rng.random() < 0.5
            q = f"Based on the passage, is it true that {lower_first(qa['claim'].format(qa['a'] if true else wrong[0]))}?"
            a = "yes" if true else "no"
            opts = None
    elif qa_type.startswith("multiple-choice"):
        wrong = distractors(qa, pools, rng, 3)
        if len(wrong) < (1 if qa["attr"] in ("yn", "yn3") else 2):
            return None
        opts = [a] + wrong
    else:
        opts = None
    if opts is not None:
        if qa["attr"] not in ("yn", "yn3"):
            rng.shuffle(opts)
        else:
            opts = [o for o in ("yes", "no", "maybe") if o in opts]
        q = q + "\nOptions:\n" + "\n".join(f"- {o}" for o in opts)
    if qa_type.endswith("+CoT"):
        why = _reasoning(qa, rng)
        if claim_mode and not qa_type.startswith("multiple-choice"):
            why = f"{why} The statement {'matches' if a == 'yes' else 'does not match'} this."
        return {"Q": q + COT_SUFFIX, "A": why + COT_ANSWER + a}
    return {"Q": q, "A": a}


def make_synth_collection(W: dict, pools, rng: random.Random) -> list[dict]:
    rows: list[dict] = []
    seen: dict[str, None] = {}
    for rc_name, domain, main_type, other_type, kinds, pref in SYNTH_DATASETS:
        made = i = 0
        cands = [r for k in kinds for r in W[k]]
        rng.shuffle(cands)
        while made < N_SYNTH_PER_DATASET:
            primary = cands[i % len(cands)]
            i += 1
            qa_type = other_type if made % 5 == 4 else main_type
            force = {"yn3": [(0, "result")], "num": [(0, "revenue")],
                     "bridge": [(1, "mouth")] if primary["kind"] == "city" else []}.get(pref, [])
            text, rendered = paragraph_for(primary, W, rng, p_rel=0.5, all_rel=pref == "bridge",
                                           force=force)
            if text in seen:
                continue
            qas = answerable_qas(rendered)
            rng.shuffle(qas)
            qas.sort(key=lambda qa: not _prefers(qa, pref))  # stable: preferred first
            want = rng.randint(2, 6)
            out, used_q = [], []
            claim_done = False
            for qa in qas:
                if len(out) >= want:
                    break
                claim_mode = pref == "claim" and qa["claim"] is not None and not claim_done
                item = format_qa(qa, qa_type, pools, rng, claim_mode=claim_mode)
                if item is None:
                    continue
                key = item["Q"].split("\n", 1)[0].lower()
                if key in used_q:
                    continue
                used_q.append(key)
                claim_done = claim_done or claim_mode
                out.append(item)
            if len(out) < 2:
                continue
            seen[text] = None
            made += 1
            rows.append({"context": text, "QA_list": out, "QA_type": qa_type, "rc_name": rc_name})
    return rows


# ----------------------------------------------------------------------------------------------
# Shared helpers for instructions and evaluation twins
# ----------------------------------------------------------------------------------------------
def full_qas(rec: dict) -> list[dict]:
    """Every question about a record (and its linked records), as if all facts were rendered."""
    group = [rec] + [r for r in rec["rel"] if r is not rec][:2]
    rendered = [(r, f, f["sents"][0]) for r in group for f in FACTS[r["kind"]](r)]
    own = [x for x in answerable_qas(rendered)
           if x["tag"] == "bridge" or x["evidence"] in [f["sents"][0] for f in FACTS[rec["kind"]](rec)]]
    return own


def balanced(n: int, k: int, rng: random.Random) -> list[int]:
    labels = [i % k for i in range(n)]
    rng.shuffle(labels)
    return labels


def place(answer: str, wrong: list[str], gold: int) -> list[str]:
    opts = list(wrong)
    opts.insert(gold, answer)
    return opts


def mc_pool(W: dict, kinds: list[str], tags: list[str], pools, rng: random.Random,
            need: int = 3) -> list[tuple[dict, list[str]]]:
    """(qa, distractors) pairs over the given record kinds/tags, in a seeded order."""
    out = []
    for k in kinds:
        for rec in W[k]:
            for qa in full_qas(rec):
                if qa["tag"] in tags:
                    wrong = distractors(qa, pools, rng, need)
                    if len(wrong) >= need:
                        out.append((qa, wrong))
    rng.shuffle(out)
    return out


def take_unique(items, n: int, used: list[str], key=lambda x: x[0]["q"]):
    """First n items whose key is not in `used` (which is extended)."""
    out = []
    for it in items:
        if len(out) >= n:
            break
        k = key(it)
        if k in used:
            continue
        used.append(k)
        out.append(it)
    if len(out) < n:
        raise RuntimeError(f"only {len(out)} of {n} unique items available")
    return out


def sentiment_items(W: dict) -> list[tuple[str, str]]:
    """Financial sentences labelled negative / neutral / positive."""
    items = []
    for c in W["company"]:
        f = {x["key"]: x for x in FACTS["company"](c)}
        lab = "positive" if c["up"] else "negative"
        items.append((f["revenue"]["sents"][1], lab))
        items.append((f["reason"]["sents"][0], lab))
        items.append((f["leader"]["sents"][0], "neutral"))
        items.append((f["staff"]["sents"][0], "neutral"))
        items.append((f["identity"]["sents"][1], "neutral"))
    for e in W["earnings"]:
        f = {x["key"]: x for x in FACTS["earnings"](e)}
        items.append((f["shares"]["sents"][1], "positive" if e["beat"] else "negative"))
        items.append((f["guidance"]["sents"][1], "positive" if e["raise"] else "negative"))
    for m in W["merger"]:
        items.append((FACTS["merger"](m)[3]["sents"][0], "neutral"))
    return items


def arithmetic_problem(rng: random.Random) -> tuple[str, str, str]:
    """(problem, answer, worked steps)."""
    kind = rng.randrange(4)
    name = rng.choice(FIRST_NAMES)
    if kind == 0:
        a, b = rng.randint(12, 480), rng.randint(12, 480)
        item = rng.choice(["apples", "books", "tickets", "bottles", "parcels"])
        return (f"{name} sold {a} {item} on Monday and {b} {item} on Tuesday. How many {item} were sold in total?",
                str(a + b), f"Add the two days: {a} + {b} = {a + b}.")
    if kind == 1:
        a, b = rng.randint(3, 24), rng.randint(3, 40)
        return (f"A box holds {b} pencils. How many pencils are in {a} boxes?", str(a * b),
                f"Multiply the number of boxes by the pencils per box: {a} x {b} = {a * b}.")
    if kind == 2:
        price, pct = rng.randrange(20, 400, 5), rng.choice([10, 15, 20, 25, 30, 40, 50])
        new = price * (100 - pct) / 100
        ans = f"{new:g}"
        return (f"A jacket costs ${price}. It is reduced by {pct}%. What is the new price in dollars?", ans,
                f"The discount is {pct}% of {price} = {price * pct / 100:g}. Then {price} - {price * pct / 100:g} = {ans}.")
    total, people = rng.randrange(24, 600, 6), rng.choice([2, 3, 4, 6])
    total -= total % people
    return (f"{name} shares {total} stickers equally among {people} friends. How many stickers does each friend get?",
            str(total // people), f"Divide the stickers by the number of friends: {total} / {people} = {total // people}.")


ENTITY_TYPES = {"city": "city", "river": "river", "scientist": "person", "species": "animal species",
                "mineral": "mineral", "gene": "gene", "disease": "disease", "drug": "drug",
                "company": "company"}


# ----------------------------------------------------------------------------------------------
# instructions.jsonl (FLAN-style) and general_instructions.jsonl (OpenOrca-style)
# ----------------------------------------------------------------------------------------------
def make_instructions(W: dict, pools, rng: random.Random) -> list[dict]:
    sent = sentiment_items(W)
    all_recs = [r for k in FACTS for r in W[k]]
    qas = [qa for r in all_recs for qa in full_qas(r) if qa["tag"] != "bridge"]
    rng.shuffle(qas)
    claims = [qa for qa in qas if qa["claim"]]
    typed = [(r["name"] if r["kind"] != "river" else f"the {r['name']} River", ENTITY_TYPES[r["kind"]])
             for r in all_recs if r["kind"] in ENTITY_TYPES]
    letters = "ABCD"

    def task(i: int) -> tuple[str, str, str]:
        t = i % 12
        if t == 0:
            s, lab = rng.choice(sent)
            return ("sentiment_classification", rng.choice([
                "Classify the sentiment of this financial news sentence as positive, negative or neutral.\nSentence: {s}",
                "Is the following sentence from a financial report positive, negative or neutral?\n{s}",
                "What is the sentiment of the sentence below? Answer positive, negative or neutral.\n\n{s}"]).format(s=s), lab)
        if t == 1:
            rec = rng.choice(all_recs)
            dom = KIND_DOMAIN[rec["kind"]]
            text = " ".join(rng.choice(f["sents"]) for f in FACTS[rec["kind"]](rec)[:2])
            return ("topic_classification",
                    f"Which domain does this text belong to: general, biomedicine or finance?\nText: {text}", dom)
        if t == 2:
            qa = qas[i % len(qas)]
            return ("extractive_qa", rng.choice([
                "Read the sentence and answer the question with a short phrase.\nSentence: {e}\nQuestion: {q}",
                "{e}\n\nBased on the sentence above, {ql}",
                "Answer the question using only the given sentence.\nSentence: {e}\nQuestion: {q}"]).format(
                e=qa["evidence"], q=qa["q"], ql=lower_first(qa["q"])), qa["a"])
        if t == 3:
            prob, ans, _ = arithmetic_problem(rng)
            return ("arithmetic", rng.choice(["Solve the problem and give only the number.\n{p}",
                                              "{p} Answer with a number.", "Problem: {p}\nAnswer:"]).format(p=prob), ans)
        if t == 4:
            qa = rng.choice(claims)
            true = rng.random() < 0.5
            wrong = distractors(qa, pools, rng, 1)
            stmt = qa["claim"].format(qa["a"] if true or not wrong else wrong[0])
            return ("yes_no_qa", f"Passage: {qa['evidence']}\nQuestion: Is it true that {lower_first(stmt)}? Answer yes or no.",
                    "yes" if true or not wrong else "no")
        if t == 5:
            rec = rng.choice(all_recs)
            fs = FACTS[rec["kind"]](rec)
            para = " ".join(rng.choice(f["sents"]) for f in fs[:5])
            return ("summarize_one_sentence", rng.choice([
                "Summarize the following paragraph in one sentence.\n{p}",
                "{p}\n\nWrite a one-sentence summary of the text above.",
                "Give a one-sentence summary:\n{p}"]).format(p=para), fs[0]["sents"][0])
        if t == 6:
            qa = qas[(7 * i) % len(qas)]
            wrong = distractors(qa, pools, rng, 3)
            if len(wrong) < 3:
                qa = next(x for x in qas if len(distractors(x, pools, random.Random(0), 3)) >= 3 and x["attr"] != "yn")
                wrong = distractors(qa, pools, rng, 3)
            g = rng.randrange(4)
            opts = place(qa["a"], wrong, g)
            body = "\n".join(f"{letters[j]}. {o}" for j, o in enumerate(opts))
            return ("multiple_choice_qa", f"Question: {qa['q']}\n{body}\nAnswer with the letter of the correct option.",
                    letters[g])
        if t == 7:
            rec = all_recs[(3 * i) % len(all_recs)]
            ev = rng.choice(rng.choice(FACTS[rec["kind"]](rec))["sents"])
            new = rng.choice([r["name"] for r in W[rec["kind"]] if r is not rec])
            return ("rewrite_replace", f"Rewrite the sentence, replacing \"{rec['name']}\" with \"{new}\".\nSentence: {ev}",
                    ev.replace(rec["name"], new))
        if t == 8:
            nums = rng.sample(range(1, 1000), rng.randint(4, 7))
            return ("sort_numbers", f"Sort these numbers from smallest to largest: {', '.join(map(str, nums))}.",
                    ", ".join(map(str, sorted(nums))))
        if t == 9:
            qa = qas[(5 * i + 1) % len(qas)]
            return ("question_generation",
                    f"Write a question about the sentence whose answer is \"{qa['a']}\".\nSentence: {qa['evidence']}",
                    qa["q"])
        if t == 10:
            name, typ = rng.choice(typed)
            return ("entity_typing", "What type of entity is \"{n}\"? Choose one of: city, river, person, "
                    "animal species, mineral, gene, disease, drug, company.".format(n=name), typ)
        qa = qas[(11 * i + 2) % len(qas)]
        return ("count_words", f"How many words are in the following sentence?\n{qa['evidence']}",
                str(n_words(qa["evidence"])))

    rows = []
    for i in range(N_INSTRUCTIONS):
        name, inst, resp = task(i)
        rows.append({"id": f"inst-{i + 1:04d}", "task": name, "instruction": inst, "response": resp})
    return rows


PIQA_BANK = [
    ("To keep {x} fresh for longer,", "store it in a sealed container in the refrigerator.",
     "store it in an open bowl next to the oven.", ["sliced cheese", "cooked rice", "chopped herbs"]),
    ("To loosen a stuck {x},", "wrap it in a rubber glove for grip and twist it.",
     "soak it in cooking oil and wait for it to shrink.", ["jar lid", "bottle cap"]),
    ("To dry a wet {x} quickly,", "hang it in a warm place where air is moving.",
     "fold it tightly and leave it in a closed drawer.", ["towel", "raincoat", "tent"]),
    ("To clean {x} that is sticky with glue,", "rub it with a cloth dampened with a little alcohol.",
     "rub it with a dry slice of bread until the glue disappears.", ["a pair of scissors", "a ruler"]),
    ("To carry {x} in a bag without spilling it,", "put it in a container with a tight lid and keep it upright.",
     "pour it into an open cup and lay the cup on its side.", ["soup", "coffee"]),
    ("To stop a {x} from wobbling,", "fold a piece of cardboard and wedge it under the short leg.",
     "pour a glass of water under the short leg.", ["table", "chair"]),
    ("To light a campfire in wet weather,", "use dry kindling that was stored under a cover.",
     "use freshly cut green branches from the nearest tree.", [""]),
    ("To find a small {x} dropped on a carpet,", "shine a torch low across the floor so it casts a shadow.",
     "switch off every light so that it stands out in the dark.", ["earring", "screw"]),
    ("To soften hard {x},", "put it in a closed container with a slice of apple overnight.",
     "leave it uncovered in the sun for a day.", ["brown sugar", "bread"]),
    ("To remove a bad smell from a {x},", "sprinkle baking soda inside and leave it overnight.",
     "spray it with perfume and close it straight away.", ["shoe", "lunch box"]),
    ("To cool a drink quickly,", "wrap the bottle in a wet paper towel and put it in the freezer.",
     "wrap the bottle in a wool scarf and put it in the cupboard.", [""]),
    ("To protect {x} from frost,", "cover them with a cloth overnight.",
     "water them with ice water in the evening.", ["young plants", "seedlings"]),
    ("To hang a picture straight,", "hold a spirit level on the top edge of the frame.",
     "judge it by looking at the floor tiles.", [""]),
    ("To sharpen a pencil without a sharpener,", "carefully shave the wood away with a small knife.",
     "rub the tip on a piece of soft cloth.", [""]),
    ("To keep a {x} from rolling off the desk,", "put it on a flat tray with a raised rim.",
     "polish it so that it slides more easily.", ["pen", "marble"]),
    ("To make boiled {x} easier to peel,", "cool them in cold water straight after boiling.",
     "freeze them solid before peeling.", ["eggs", "potatoes"]),
    ("To open a tin of paint,", "lever the lid up with a flat screwdriver at several points.",
     "hit the middle of the lid with a hammer.", [""]),
    ("To stop a {x} from squeaking,", "put a drop of oil on the hinge.",
     "put a drop of honey on the hinge.", ["door", "gate"]),
    ("To untangle a knotted {x},", "loosen the knot with a pin before pulling the ends.",
     "pull both ends as hard as you can.", ["necklace", "shoelace"]),
    ("To keep a {x} from fogging up,", "wipe it with a thin film of soap and polish it dry.",
     "breathe on it just before use.", ["bathroom mirror", "pair of swimming goggles"]),
    ("To keep ants out of a sugar bowl,", "stand the bowl in a shallow dish of water.",
     "leave the lid off so that air can circulate.", [""]),
    ("To save a phone that fell into water,", "switch it off and let it dry completely before charging.",
     "charge it immediately so the heat drives out the water.", [""]),
    ("To stop {x} from sticking to the pan,", "heat the pan with a little oil before adding it.",
     "add it to a cold, dry pan.", ["fish", "pancake batter"]),
]

SIQA_BANK = [
    ("{A} forgot {B}'s birthday even though they had promised to call.", "How would {B} feel as a result?",
     "hurt and disappointed", ["proud of {A}", "excited to go shopping"]),
    ("{A} stayed up all night studying for the final exam.", "How would {A} feel the next morning?",
     "tired", ["well rested", "bored with nothing to do"]),
    ("{A} found a wallet on the bus and handed it to the driver.", "How would others describe {A}?",
     "honest", ["careless", "greedy"]),
    ("{A} spilled coffee on {B}'s new laptop.", "What will {A} want to do next?",
     "apologise and help clean it up", ["order another coffee", "laugh and walk away"]),
    ("{A} practised the piano every evening for months before the recital.", "Why did {A} do this?",
     "to play well at the recital", ["to annoy the neighbours", "because the piano was broken"]),
    ("{A} gave {B} a ride to the airport at five in the morning.", "How would {B} feel?",
     "grateful", ["angry", "jealous"]),
    ("{A} lost the race after leading for most of it.", "How would {A} feel?",
     "disappointed", ["relieved", "amused"]),
    ("{A} invited the new neighbour over for dinner.", "What will the neighbour probably do?",
     "thank {A} and accept the invitation", ["call the police", "move away immediately"]),
    ("{A} noticed that {B} was carrying too many boxes.", "What will {A} likely do?",
     "offer to carry some of the boxes", ["take a photo of {B}", "close the door on {B}"]),
    ("{A} borrowed {B}'s bicycle and returned it with a flat tyre.", "What should {A} do now?",
     "offer to repair the tyre", ["borrow the bicycle again", "hide the bicycle"]),
    ("{A} got the highest mark in the class on the maths test.", "How would {A} feel?",
     "proud", ["ashamed", "frightened"]),
    ("{A} cancelled plans with {B} for the third time this month.", "How would {B} feel?",
     "annoyed", ["delighted", "sleepy"]),
    ("{A} saw a child crying alone in the supermarket.", "What will {A} want to do?",
     "help the child find their parents", ["leave the shop quickly", "buy some sweets for themselves"]),
    ("{A} packed an umbrella before leaving the house.", "Why did {A} do this?",
     "because rain was forecast", ["because it was hot and dry", "to use it at the swimming pool"]),
    ("{A} trained for a year to run a marathon.", "What does {A} need to do the night before the race?",
     "rest and eat well", ["stay up all night", "skip dinner"]),
    ("{A} told {B} a secret and {B} shared it with everyone.", "How would {A} feel about {B}?",
     "betrayed", ["thankful", "impressed"]),
    ("{A} cooked a large dinner for the whole family.", "What will the family likely do?",
     "thank {A} for the meal", ["complain that they are never hungry", "leave before eating"]),
    ("{A} moved to a new city where they knew no one.", "How might {A} feel at first?",
     "lonely", ["famous", "tired of their many friends"]),
    ("{A} returned the extra change the cashier had given by mistake.", "How would the cashier feel?",
     "thankful", ["insulted", "bored"]),
    ("{A} was late for work because the train broke down.", "What will {A} want to do?",
     "explain the delay to the manager", ["go back home to sleep", "blame a coworker"]),
]

WINO_BANK = [  # sentence with {A}/{B} and one "_"; (word for option 1, word for option 2)
    ("{A} lent money to {B} because _ had {w}.", "plenty of savings", "no savings left"),
    ("{A} could not beat {B} at chess because _ was {w}.", "a beginner", "an expert"),
    ("{A} asked {B} for directions because _ {w}.", "was lost", "knew the town well"),
    ("{A} helped {B} with the homework because _ {w} the topic.", "understood", "was confused by"),
    ("{A} woke {B} up in the morning because _ {w}.", "was an early riser", "had slept through the alarm"),
    ("{A} paid for {B}'s lunch because _ {w}.", "had just been paid", "had forgotten their wallet"),
    ("{A} apologised to {B} because _ {w}.", "had broken the vase", "was upset about the broken vase"),
    ("{A} taught {B} to swim because _ {w}.", "was a lifeguard", "had never learned"),
    ("{A} was jealous of {B} because _ had {w} garden.", "a small, bare", "a beautiful"),
    ("{A} listened quietly while {B} talked because _ {w}.", "was a patient listener", "had a lot to say"),
    ("{A} called a plumber for {B} because _ {w}.", "knew a good one", "had a leaking pipe"),
    ("{A} thanked {B} because _ had {w} a gift.", "received", "given"),
    ("{A} carried {B}'s suitcase up the stairs because _ was {w}.", "strong", "exhausted"),
    ("The piano would not fit through the door because the _ was too {w}.", "wide", "narrow", "piano", "door"),
    ("The water in the pot boiled before the water in the kettle because the _ was on the {w} flame.",
     "larger", "smaller", "pot", "kettle"),
    ("The cat chased the mouse until the _ {w}.", "got tired and lay down", "escaped into a hole", "cat", "mouse"),
    ("The glass broke when it hit the floor because the _ was so {w}.", "fragile", "hard", "glass", "floor"),
    ("The plant grew better on the windowsill than in the hallway because the _ gets {w} sunlight.",
     "more", "less", "windowsill", "hallway"),
    ("The jacket kept {A} warmer than the sweater did because the _ was {w}.", "thicker", "thinner", "jacket", "sweater"),
    ("The car overtook the bus because the _ was {w}.", "faster", "slower", "car", "bus"),
]

HELLASWAG_BANK = [  # activity, ctx_a, subject, first ending, next ending
    ("Baking cookies", "A woman mixes butter and sugar in a large bowl.", "she",
     "adds flour and eggs, then scoops the dough onto a baking tray.",
     "puts the tray in the oven and waits for the cookies to turn golden."),
    ("Washing a car", "A man sprays the side of a red car with a hose.", "he",
     "rubs the doors with a soapy sponge and rinses the foam away.", "dries the car with a soft towel until it shines."),
    ("Painting a fence", "A boy dips a wide brush into a can of white paint.", "he",
     "spreads the paint along the wooden boards in long, even strokes.", "steps back to check for any spots he has missed."),
    ("Playing the violin", "A girl tucks a violin under her chin on a small stage.", "she",
     "draws the bow across the strings and begins a slow melody.", "lowers the violin and bows as the audience claps."),
    ("Changing a tyre", "A man loosens the nuts on a car wheel with a wrench.", "he",
     "raises the car with a jack and swaps the flat tyre for the spare.", "tightens the nuts again and lowers the car to the ground."),
    ("Planting a tree", "Two people dig a deep hole in a sunny garden.", "they",
     "lower the young tree into the hole and fill it with soil.", "water the tree and press the soil down around it."),
    ("Making tea", "A person fills a kettle with water and switches it on.", "the person",
     "pours the hot water over a tea bag in a mug.", "removes the tea bag and adds a splash of milk."),
    ("Shovelling snow", "A man in a thick coat stands on a snowy driveway.", "he",
     "pushes a shovel through the snow and throws it to the side.", "sprinkles salt on the cleared path so it will not freeze."),
    ("Grooming a dog", "A woman kneels next to a large, shaggy dog on the lawn.", "she",
     "runs a brush through its fur, pulling out loose hair.", "gives the dog a treat and lets it run across the grass."),
    ("Ironing clothes", "A man lays a wrinkled shirt flat on an ironing board.", "he",
     "presses the hot iron over the sleeves until they are smooth.", "hangs the shirt on a hanger so it stays smooth."),
    ("Rock climbing", "A climber chalks her hands at the bottom of a steep wall.", "she",
     "reaches for the first hold and pulls herself up the rock.", "reaches the top and waves down to her partner."),
    ("Kayaking", "A man pushes a kayak into a calm lake.", "he",
     "climbs in and paddles away from the shore.", "stops in the middle of the lake to watch a pair of ducks."),
    ("Wrapping a gift", "A girl places a box in the middle of a sheet of paper.", "she",
     "folds the paper around the box and tapes the edges.", "ties a ribbon around the box and attaches a small card."),
    ("Juggling", "A performer holds three balls in front of a small crowd.", "he",
     "tosses them into the air one after another and catches them in a steady rhythm.", "adds a fourth ball, and the crowd cheers."),
    ("Mopping a floor", "A woman fills a bucket with warm, soapy water.", "she",
     "dips the mop in the bucket and wipes the kitchen floor.", "leaves the floor to dry and empties the bucket outside."),
    ("Skateboarding", "A teenager rolls down a quiet street on a skateboard.", "he",
     "pushes off with one foot and jumps the board over a low kerb.", "lands smoothly and rolls on down the street."),
    ("Building a sandcastle", "Two children pack wet sand into a bucket on the beach.", "they",
     "turn the bucket over and lift it to reveal a tower of sand.", "decorate the tower with shells and dig a moat around it."),
    ("Cutting hair", "A barber drapes a cape over a customer in a chair.", "the barber",
     "combs the hair and trims the ends with scissors.", "holds up a mirror so the customer can see the back."),
    ("Knitting", "An old man holds two needles and a ball of blue wool.", "he",
     "loops the wool around the needles, adding row after row to a scarf.", "holds up the finished scarf and checks its length."),
    ("Flying a kite", "A girl runs across a windy field holding a string.", "she",
     "lets out more string as the kite climbs high into the sky.", "winds the string back in slowly as the wind drops."),
]


def make_general_instructions(W: dict, pools, rng: random.Random) -> list[dict]:
    all_recs = [r for k in FACTS for r in W[k]]
    qas = [qa for r in all_recs for qa in full_qas(r)]
    rng.shuffle(qas)
    why = [qa for qa in qas if qa["tag"] == "why"]
    claims = [qa for qa in qas if qa["claim"]]
    rows = []
    for i in range(N_GENERAL_INSTRUCTIONS):
        t = i % 6
        if t == 0:
            qa = qas[i % len(qas)]
            q = f"Answer the following question.\n{qa['q']}"
            r = f"The answer is {qa['a']}. This is stated in the source: {qa['evidence']}"
        elif t == 1:
            rec = all_recs[(13 * i) % len(all_recs)]
            text, rendered = paragraph_for(rec, W, rng)
            cand = answerable_qas(rendered)
            qa = rng.choice(cand)
            q = f"Read the text and answer the question.\n\nText: {text}\n\nQuestion: {qa['q']}"
            r = f"{cap(qa['a'])}. The text says: \"{qa['evidence']}\""
        elif t == 2:
            prob, ans, steps = arithmetic_problem(rng)
            q = f"{prob} Explain your reasoning step by step."
            r = f"Step 1: Identify the numbers in the problem.\nStep 2: {steps}\nSo the answer is {ans}."
        elif t == 3:
            qa = claims[i % len(claims)]
            wrong = distractors(qa, pools, rng, 1)
            true = rng.random() < 0.5 or not wrong
            stmt = qa["claim"].format(qa["a"] if true else wrong[0])
            q = f"Is the following statement true or false? \"{stmt}.\""
            r = (f"True. {qa['evidence']}" if true
                 else f"False. The correct statement is \"{qa['claim'].format(qa['a'])}\": {qa['evidence']}")
        elif t == 4:
            qa = why[i % len(why)]
            q = f"{qa['q']} Give a short explanation."
            r = f"{cap(qa['a'])}. {qa['evidence']}"
        else:
            goal, right, wrong, xs = PIQA_BANK[i % len(PIQA_BANK)]
            x = rng.choice(xs)
            g = goal.format(x=x).rstrip(",")
            q = f"{g}, which is better: \"{right[:-1]}\" or \"{wrong[:-1]}\"? Explain."
            r = f"The better choice is to {right[:-1]}. The other option would not work and could make things worse."
            q = q[0].upper() + q[1:]
        rows.append({"id": f"orca-{i + 1:04d}", "question": q, "response": r})
    return rows


# ----------------------------------------------------------------------------------------------
# eval/<task>.jsonl: offline twins with the real datasets' field names
# ----------------------------------------------------------------------------------------------
def _arc(items, labels, prefix: str, stem_key: str = "question") -> list[dict]:
    rows = []
    for i, ((qa, wrong), g) in enumerate(zip(items, labels)):
        opts = place(qa["a"], wrong[:3], g)
        rows.append({"id": f"{prefix}_{i + 1:05d}", stem_key: qa["q"],
                     "choices": {"text": opts, "label": list("ABCD")}, "answerKey": "ABCD"[g]})
    return rows


def eval_general(W: dict, pools, rng: random.Random) -> dict[str, list[dict]]:
    N = N_EVAL_GENERAL
    used: list[str] = []
    out: dict[str, list[dict]] = {}
    easy = take_unique(mc_pool(W, ["species", "mineral", "river", "scientist", "city"], ["fact"], pools, rng), N, used)
    out["arc_easy"] = _arc(easy, balanced(N, 4, rng), "IPTEasy")
    hard = take_unique(mc_pool(W, ["city", "river", "scientist", "species", "mineral", "treaty", "dish"],
                               ["why", "num", "bridge"], pools, rng), N, used)
    out["arc_challenge"] = _arc(hard, balanced(N, 4, rng), "IPTChallenge")
    obqa = take_unique(mc_pool(W, ["species", "mineral", "dish", "treaty"], ["fact", "why"], pools, rng), N, used)
    out["openbookqa"] = _arc(obqa, balanced(N, 4, rng), "IPTOBQA", stem_key="question_stem")
    for row in out["openbookqa"]:
        row["question_stem"] = row.pop("question_stem")  # keep field order id, question_stem, choices, answerKey
        row["choices"], row["answerKey"] = row.pop("choices"), row.pop("answerKey")

    # mmlu: closed-book questions over five subjects
    subjects = [("high_school_geography", ["city", "river"]), ("high_school_biology", ["species", "gene"]),
                ("college_medicine", ["drug", "disease"]), ("high_school_macroeconomics", ["rates", "company"]),
                ("high_school_world_history", ["treaty", "scientist"])]
    per = N_EVAL_MMLU // len(subjects)
    mm = []
    for subj, kinds in subjects:
        items = take_unique(mc_pool(W, kinds, ["fact", "why", "num", "bridge"], pools, rng), per, used)
        for (qa, wrong) in items:
            mm.append((subj, qa, wrong))
    labels = balanced(len(mm), 4, rng)
    out["mmlu"] = [{"question": qa["q"], "subject": subj, "choices": place(qa["a"], wrong[:3], g), "answer": g}
                   for (subj, qa, wrong), g in zip(mm, labels)]

    # boolq: passage rendered from a world record, question = a true or false claim about it
    recs = [r for k in DOMAIN_KINDS["general"] for r in W[k]]
    rng.shuffle(recs)
    labels = balanced(N, 2, rng)
    rows = []
    for rec in recs * 3:
        if len(rows) >= N:
            break
        fs = FACTS[rec["kind"]](rec)
        cl = [(fi, qa) for fi, f in enumerate(fs) for qa in f["qas"] if qa["claim"]]
        if not cl:
            continue
        fi, qa = rng.choice(cl)
        lab = labels[len(rows)]
        wrong = distractors(qa, pools, rng, 1)
        if not wrong:
            continue
        stmt = qa["claim"].format(qa["a"] if lab == 1 else wrong[0])
        text, _ = render([rec], rng, force=[(0, fs[fi]["key"])]) or paragraph_for(rec, W, rng, force=[(0, fs[fi]["key"])])
        q = f"is it true that {lower_first(stmt)}".lower()
        if any(r["question"] == q for r in rows):
            continue
        rows.append({"question": q, "passage": text, "label": lab})
    out["boolq"] = rows

    # piqa
    combos = [(g, r, w, x) for g, r, w, xs in PIQA_BANK for x in xs]
    rng.shuffle(combos)
    labels = balanced(N, 2, rng)
    out["piqa"] = []
    for (goal, right, wrong, x), lab in zip(combos[:N], labels):
        sols = [right, wrong] if lab == 0 else [wrong, right]
        out["piqa"].append({"goal": goal.format(x=x).replace("  ", " "), "sol1": cap(sols[0]),
                            "sol2": cap(sols[1]), "label": lab})

    # siqa
    labels = balanced(N, 3, rng)
    out["siqa"] = []
    for i in range(N):
        ctx, q, right, wrongs = SIQA_BANK[i % len(SIQA_BANK)]
        a, b = rng.sample(FIRST_NAMES, 2)
        f = lambda s: s.format(A=a, B=b)  # noqa: E731
        opts = place(f(right), [f(w) for w in wrongs], labels[i])
        out["siqa"].append({"context": f(ctx), "question": f(q), "answerA": opts[0], "answerB": opts[1],
                            "answerC": opts[2], "label": str(labels[i] + 1)})

    # winogrande: twin sentences differing in one trigger phrase
    out["winogrande"] = []
    for i in range(N):
        entry = WINO_BANK[(i // 2) % len(WINO_BANK)]
        tpl, w1, w2 = entry[:3]
        if len(entry) == 5:
            o1, o2 = entry[3], entry[4]
            a = b = ""
        else:
            a, b = rng.sample(FIRST_NAMES, 2)
            o1, o2 = a, b
        word, gold = (w1, o1) if i % 2 == 0 else (w2, o2)
        opts = [o1, o2]
        if rng.random() < 0.5:
            opts.reverse()
        out["winogrande"].append({"sentence": tpl.format(A=a, B=b, w=word), "option1": opts[0],
                                  "option2": opts[1], "answer": str(opts.index(gold) + 1)})

    # hellaswag
    labels = balanced(N, 4, rng)
    endings_pool = [e for x in HELLASWAG_BANK for e in (x[3], x[4])]
    out["hellaswag"] = []
    for i in range(N):
        act, ctx_a, subj, e1, e2 = HELLASWAG_BANK[i % len(HELLASWAG_BANK)]
        if i >= len(HELLASWAG_BANK):
            ctx_a, ctx_b, right = f"{ctx_a} {cap(subj)} {e1}", f"then {subj}", e2
        else:
            ctx_b, right = subj, e1
        wrong = rng.sample([e for e in endings_pool if e not in (e1, e2)], 3)
        out["hellaswag"].append({"ind": i, "activity_label": act, "ctx_a": ctx_a, "ctx_b": ctx_b,
                                 "ctx": f"{ctx_a} {cap(ctx_b)}", "endings": place(right, wrong, labels[i]),
                                 "label": str(labels[i])})
    return out


CHEMPROT_TEMPLATES = {
    "inhibitor": ["{d} suppressed the enzymatic activity of {g} in a dose-dependent manner.",
                  "Treatment with {d} cut {g} activity by more than half in cultured cells."],
    "activator": ["{d} increased the catalytic activity of {g} in liver extracts.",
                  "Adding {d} to the assay doubled the activity of {g}."],
    "agonist": ["{d} bound to {g} and switched on its downstream signalling, just like the natural ligand.",
                "{d} mimicked the natural hormone and triggered signalling through {g}."],
    "antagonist": ["{d} occupied the binding site of {g} and stopped the natural ligand from activating it.",
                   "In the presence of {d}, the natural ligand could no longer activate {g}."],
    "substrate": ["{g} converts {d} into its active metabolite in the liver.",
                  "{d} is metabolised by {g} before it can act."],
}
RCT_TEMPLATES = {
    "background": ["{dz} affects about {prev} in every 100,000 people, and current treatments are often poorly tolerated.",
                   "Few treatments for {dz} have been tested in large randomised trials."],
    "objective": ["We aimed to test whether {dr} reduces {ep} in adults with {dz}.",
                  "The objective of this study was to assess the efficacy and safety of {dr} in {dz}."],
    "methods": ["We randomly assigned {n} patients with {dz} to {dr} or placebo for {w} weeks.",
                "The primary endpoint was the change in {ep} from baseline to week {w}."],
    "results": ["{dr} reduced {ep} by {eff}% compared with placebo (p = {p}).",
                "{ae} was the most common adverse event, occurring in {aep}% of participants."],
    "conclusions": ["{dr} appears to be an effective and well-tolerated option for {dz}.",
                    "These findings support further study of {dr} in larger populations."],
}
MQP_INTENTS = {
    "symptoms": ["What are the symptoms of {dz}?", "How can I tell if I have {dz}?", "Which signs point to {dz}?"],
    "treatment": ["How is {dz} treated?", "What medicine do doctors use for {dz}?", "Which therapy helps with {dz}?"],
    "cause": ["What causes {dz}?", "Why do people develop {dz}?", "Where does {dz} come from?"],
    "organ": ["Which part of the body does {dz} affect?", "What organ is damaged by {dz}?"],
    "common": ["How common is {dz}?", "How many people have {dz}?"],
}


def eval_domain(W: dict, pools, rng: random.Random) -> dict[str, list[dict]]:
    N = N_EVAL_DOMAIN
    out: dict[str, list[dict]] = {}

    # pubmedqa: trials balanced over yes/no/maybe
    yn = ["yes", "no", "maybe"]
    by = {o: [t for t in W["trial"] if t["outcome"] == o] for o in yn}
    trials = [by[o][i] for i in range(N // 3) for o in yn]
    rng.shuffle(trials)
    out["pubmedqa"] = []
    for i, t in enumerate(trials):
        _, rendered = paragraph_for(t, W, rng, force=[(0, "result")])
        text = " ".join(sent for r, f, sent in rendered if f["key"] != "conclusion")
        q = f"Did {t['drug']['name']} reduce {t['endpoint']} in patients with {t['disease']['name']}?"
        out["pubmedqa"].append({"id": f"pubmedqa-{i + 1:04d}", "input": f"Context: {text}\nQuestion: {q}\nAnswer:",
                                "options": yn, "gold_index": yn.index(t["outcome"])})

    # chemprot: relation between drug and target, 6 per relation
    rels = list(CHEMPROT_TEMPLATES)
    rows = []
    for rel in rels:
        drugs = [d for d in W["drug"] if d["relation"] == rel]
        for j in range(N // len(rels)):
            d = drugs[j % len(drugs)]
            s = CHEMPROT_TEMPLATES[rel][(j // len(drugs)) % 2].format(d=d["name"], g=d["gene"]["name"])
            rows.append((s, d, rel))
    rng.shuffle(rows)
    out["chemprot"] = [{"id": f"chemprot-{i + 1:04d}",
                        "input": f"{s}\nWhat is the relation between {d['name']} and {d['gene']['name']}?",
                        "options": rels, "gold_index": rels.index(rel)} for i, (s, d, rel) in enumerate(rows)]

    # rct: role of a sentence in an abstract
    labs = list(RCT_TEMPLATES)
    yes_trials = [t for t in W["trial"] if t["outcome"] == "yes"]
    rows = []
    for lab in labs:
        for j in range(N // len(labs)):
            t = yes_trials[(j + 3 * labs.index(lab)) % len(yes_trials)]
            s = RCT_TEMPLATES[lab][j % 2].format(
                dz=t["disease"]["name"], prev=t["disease"]["prev"], dr=t["drug"]["name"], ep=t["endpoint"],
                n=f"{t['n']:,}", w=t["weeks"], eff=t["effect"], p=t["p"], ae=cap(t["ae"]), aep=t["ae_pct"])
            rows.append((s, lab))
    rng.shuffle(rows)
    out["rct"] = [{"id": f"rct-{i + 1:04d}", "input": f"Sentence from a clinical trial abstract: {s}\nWhich section does it belong to?",
                   "options": labs, "gold_index": labs.index(lab)} for i, (s, lab) in enumerate(rows)]

    # mqp: are two patient questions the same?
    labels = balanced(N, 2, rng)
    intents = list(MQP_INTENTS)
    out["mqp"] = []
    for i in range(N):
        dz = W["disease"][i % len(W["disease"])]["name"]
        it = rng.choice(intents)
        if labels[i] == 1:
            q1, q2 = rng.sample(MQP_INTENTS[it], 2)
        else:
            other = rng.choice([x for x in intents if x != it])
            q1, q2 = rng.choice(MQP_INTENTS[it]), rng.choice(MQP_INTENTS[other])
        out["mqp"].append({"id": f"mqp-{i + 1:04d}",
                           "input": f"Question 1: {q1.format(dz=dz)}\nQuestion 2: {q2.format(dz=dz)}\nDo these two questions ask the same thing?",
                           "options": ["no", "yes"], "gold_index": labels[i]})

    # usmle: vignette -> diagnosis, or disease -> first-line drug
    labels = balanced(N, 4, rng)
    out["usmle"] = []
    dzs = list(W["disease"])
    for i in range(N):
        dz = dzs[i % len(dzs)]
        age, sex = rng.randint(18, 80), rng.choice(["man", "woman"])
        if i < len(dzs) or dz["drug"] is None:
            sym = list(dz["symptoms"])
            rng.shuffle(sym)
            stem = (f"A {age}-year-old {sex} presents with {join_list(sym)}. Examination points to a problem with the "
                    f"{dz['organ']}. Which of the following is the most likely diagnosis?")
            ans = dz["name"]
            wrong = rng.sample([d["name"] for d in dzs if d is not dz], 3)
        else:
            stem = (f"A {age}-year-old {sex} has just been diagnosed with {dz['name']}. "
                    f"Which of the following is the first-line treatment?")
            ans = dz["drug"]["name"]
            wrong = rng.sample([d["name"] for d in W["drug"] if d is not dz["drug"]], 3)
        out["usmle"].append({"id": f"usmle-{i + 1:04d}", "input": stem, "options": place(ans, wrong, labels[i]),
                             "gold_index": labels[i]})

    # fpb / fiqa_sa: sentiment, 10 per label
    senti = ["negative", "neutral", "positive"]
    items = sentiment_items(W)
    rng.shuffle(items)
    picked = [x for lab in senti for x in [y for y in items if y[1] == lab][:N // 3]]
    rng.shuffle(picked)
    out["fpb"] = [{"id": f"fpb-{i + 1:04d}", "input": f"{s}\nQuestion: What is the sentiment of this sentence?\nAnswer:",
                   "options": senti, "gold_index": senti.index(lab)} for i, (s, lab) in enumerate(picked)]
    posts = []
    for e in W["earnings"]:
        tk = e["company"]["ticker"]
        if e["beat"]:
            posts.append((f"${tk} beat on earnings, shares up {e['move']}% after hours", "positive"))
        else:
            posts.append((f"${tk} missed estimates again, stock down {e['move']}%", "negative"))
        posts.append((f"${tk} reports {e['quarter']} numbers after the close today", "neutral"))
    for m in W["merger"]:
        posts.append((f"${m['target']['ticker']} jumps {m['premium']}% on buyout offer from {m['acquirer']['name']}", "positive"))
        posts.append((f"{m['acquirer']['name']} deal for ${m['target']['ticker']} could face delays as {m['risk']}", "negative"))
        posts.append((f"{m['acquirer']['name']} and {m['target']['name']} hold a joint call at 9am", "neutral"))
    rng.shuffle(posts)
    picked = [x for lab in senti for x in [y for y in posts if y[1] == lab][:N // 3]]
    rng.shuffle(picked)
    out["fiqa_sa"] = [{"id": f"fiqa_sa-{i + 1:04d}", "input": f"{s}\nWhat is the sentiment of this post?",
                       "options": senti, "gold_index": senti.index(lab)} for i, (s, lab) in enumerate(picked)]

    # headline: gold-price headlines with yes/no sub-questions, balanced
    labels = balanced(N, 2, rng)
    out["headline"] = []
    hq = {"up": "Does the news headline talk about price going up?",
          "down": "Does the news headline talk about price going down?",
          "future": "Does the news headline talk about a future price?"}
    # class_id as on the hub (one per question, 0..8); ours cover 3 of the 9 questions, numbered
    # in the order of the source data's label columns (price, up, constant, down, past price,
    # future price, past event, future event, asset comparison): an assumption, unverified
    hclass = {"up": 1, "down": 3, "future": 5}
    for i in range(N):
        m = W["market"][i % len(W["market"])]
        kind = rng.choice(["up", "down", "future"])
        gp = money(m["gold"])
        if kind == "up":
            h = f"Gold climbs to ${gp} an ounce as {m['reason']}"
            truth = {"up": 1, "down": 0, "future": 0}
        elif kind == "down":
            h = f"Gold slips to ${gp} an ounce after {m['reason']}"
            truth = {"up": 0, "down": 1, "future": 0}
        else:
            h = f"Analysts expect gold to reach ${gp} an ounce by the end of the year"
            truth = {"up": 0, "down": 0, "future": 1}
        qk = rng.choice([k for k, v in truth.items() if v == labels[i]])
        out["headline"].append({"id": f"headline-{i + 1:04d}", "input": f"Headline: {h}\nQuestion: {hq[qk]}",
                                "options": ["No", "Yes"], "gold_index": labels[i],
                                "class_id": hclass[qk]})

    # convfinqa: numeric answers from a small table + text
    out["convfinqa"] = []
    cos = list(W["company"])
    for i in range(N):
        c = cos[i % len(cos)]
        diff = round(c["r1"] - c["r0"], 1)
        table = (f"| (in millions of dollars) | {c['y0']} | {c['y1']} |\n| revenue | {c['r0']:.1f} | {c['r1']:.1f} |\n"
                 f"| net income | - | {c['ni']:.1f} |")
        intro = FACTS["company"](c)[0]["sents"][0]
        kind = i // len(cos) if i < 2 * len(cos) else 2
        if kind == 0:
            q, a = f"what was the percentage change in revenue from {c['y0']} to {c['y1']}?", f"{100 * diff / c['r0']:.1f}"
        elif kind == 1:
            q, a = f"what was the net profit margin in {c['y1']}?", f"{100 * c['ni'] / c['r1']:.1f}"
        else:
            q, a = f"what was the change in revenue from {c['y0']} to {c['y1']}?", f"{diff:.1f}"
        out["convfinqa"].append({"id": f"convfinqa-{i + 1:04d}",
                                 "input": f"{intro}\n{table}\nQuestion: {q}\nAnswer:", "label": a})

    # ner: person / organization / location
    out["ner"] = []
    for i in range(N):
        c = cos[i % len(cos)]
        city = c["city"]["name"]
        tpl = i % 3
        if tpl == 0:
            s = f"{c['ceo']}, chief executive of {c['name']}, said the company will open a new office in {city}."
            ents = [(c["ceo"], "person"), (c["name"], "organization"), (city, "location")]
        elif tpl == 1:
            other = cos[(i + 5) % len(cos)]
            s = f"{c['name']} signed a supply agreement with {other['name']} at a meeting in {city}."
            ents = [(c["name"], "organization"), (other["name"], "organization"), (city, "location")]
        else:
            s = f"Shareholders in {city} re-elected {c['ceo']} to the board of {c['name']} on Tuesday."
            ents = [(city, "location"), (c["ceo"], "person"), (c["name"], "organization")]
        out["ner"].append({"id": f"ner-{i + 1:04d}",
                           "input": f"List the named entities in the sentence as \"entity (type)\" items separated by \", \" "
                                    f"(types: person, organization, location).\nSentence: {s}\nEntities:",
                           "label": ", ".join(f"{e} ({t})" for e, t in ents)})
    return out


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------
def build_all() -> dict[str, list[dict]]:
    """Every fixture file (relative path -> rows), fully determined by SEED."""
    namer = Namer(_rng("names"))
    world = build_world(_rng("world"), namer)
    world2 = build_world(_rng("world-synth"), namer, scale=0.75)  # disjoint names: new contexts
    pools = build_pools([world, world2])
    files = {
        "raw_corpus.jsonl": make_corpus(world, _rng("corpus")),
        "synth_collection.jsonl": make_synth_collection(world2, pools, _rng("synth")),
        "instructions.jsonl": make_instructions(world, pools, _rng("instructions")),
        "general_instructions.jsonl": make_general_instructions(world, pools, _rng("orca")),
    }
    evals = eval_general(world, pools, _rng("eval-general"))
    evals.update(eval_domain(world, pools, _rng("eval-domain")))
    for task in EVAL_TASKS:
        files[f"eval/{task}.jsonl"] = evals[task]
    return files


def dumps_jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def generate(out_dir: str | Path = FIXTURE_DIR) -> dict[str, int]:
    """Write every fixture file under out_dir; returns {relative path: row count}."""
    out_dir = Path(out_dir)
    counts = {}
    for rel, rows in build_all().items():
        path = out_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write(dumps_jsonl(rows))
        counts[rel] = len(rows)
    return counts


def check(shipped: str | Path = FIXTURE_DIR) -> list[str]:
    """Regenerate into a temp dir; return the relative paths that differ from (or are missing in) `shipped`."""
    shipped = Path(shipped)
    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp)
        fresh = sorted(str(p.relative_to(tmp)) for p in Path(tmp).rglob("*.jsonl"))
        old = sorted(str(p.relative_to(shipped)) for p in shipped.rglob("*.jsonl")) if shipped.exists() else []
        bad = [r for r in fresh if not (shipped / r).exists()
               or not filecmp.cmp(Path(tmp) / r, shipped / r, shallow=False)]
        bad += [f"{r} (not generated)" for r in old if r not in fresh]
    return bad


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(FIXTURE_DIR), help="output directory (default: the shipped fixtures)")
    ap.add_argument("--check", action="store_true", help="exit 1 if regenerating would change any file")
    args = ap.parse_args(argv)
    if args.check:
        bad = check(args.out)
        for b in bad:
            print(f"differs: {b}", file=sys.stderr)
        print("fixtures up to date" if not bad else f"{len(bad)} fixture file(s) out of date")
        return 1 if bad else 0
    counts = generate(args.out)
    for rel, n in counts.items():
        print(f"{n:5d}  {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
