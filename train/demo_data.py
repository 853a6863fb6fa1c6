"""Deterministic generator of small *demo* labelled datasets.

The project ships these CSV files (``train/data/*.csv``) so that the default
models can be trained completely offline.  The texts are synthetic: they are
assembled from compositional templates with many slot fillers, so they look
like English movie reviews (task ``sentiment``) and AG-News-style news items
(task ``topic``) while staying small, balanced and byte-identical on every
run.

Every name of a film, person, team, company or product used here is made up.

Regenerate the committed files with::

    python -m train.demo_data            # writes train/data/{task}_{split}.csv
    python -m train.demo_data --check    # exit status 1 if they are stale

Only the standard library is used.
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

TASKS = {
    "sentiment": ["negative", "positive"],
    "topic": ["World", "Sports", "Business", "Sci/Tech"],
}
SPLITS = ("train", "dev")
SPLIT_SIZES = {"train": 600, "dev": 160}
DEFAULT_SEED = 20240611

DATA_DIR = Path(__file__).parent / "data"

# Word-count ranges (``len(text.split())``) of the three length buckets.
SHORT_WORDS = (3, 8)
MEDIUM_WORDS = (9, 59)
LONG_WORDS = (60, 150)
# Share of each class drawn from the short and from the long bucket.
SHORT_SHARE = 0.3
LONG_SHARE = 0.3

_MAX_ATTEMPTS = 5000


# ---------------------------------------------------------------------------
# Slot filling
# ---------------------------------------------------------------------------


class _Picker:
    """Mapping used with ``str.format_map`` that draws slot values at random.

    ``{actor}`` and ``{actor2}`` draw two *different* values from the pool
    ``actor``.  Names in ``sticky`` (people, titles, teams, companies, ...)
    keep their value for the whole text, so a review talks about one film
    and a news item about one team.  Other slots draw a fresh value on every
    use, avoiding values already used in the same text while possible.
    A ``C_`` prefix (``{C_adj}``) capitalises the first letter.
    """

    def __init__(self, rng, pools, sticky=(), preset=None):
        self.rng = rng
        self.pools = pools
        self.sticky = frozenset(sticky)
        self.memo = dict(preset or {})
        self.used = {}
        for key, value in self.memo.items():
            self.used.setdefault(key.rstrip("0123456789"), []).append(value)

    def __getitem__(self, key):
        cap = key.startswith("C_")
        name = key[2:] if cap else key
        base = name.rstrip("0123456789")
        if name in self.memo:  # sticky or preset value
            value = self.memo[name]
        else:
            pool = self.pools[base]
            used = self.used.setdefault(base, [])
            fresh = [v for v in pool if v not in used]
            value = self.rng.choice(fresh or list(pool))
            used.append(value)
            if base in self.sticky:
                self.memo[name] = value
        return value[:1].upper() + value[1:] if cap else value

    def fill(self, template):
        return template.format_map(self)


_AN_EXCEPTIONS = (
    "one", "once", "unique", "unit", "univers", "uniform", "union", "use", "usu", "eu", "ura",
)
_AN_SILENT_H = ("hour", "honest", "honor", "heir")


def _wants_an(word):
    w = word.lower().lstrip("\"'(")
    if not w:
        return False
    if w.startswith(_AN_EXCEPTIONS):
        return False
    if w.startswith(_AN_SILENT_H) or w[0] in "aeiou8":
        return True
    return w.startswith(("11", "18")) and (len(w) == 2 or not w[2].isdigit())


def _fix_articles(text):
    """Choose between "a" and "an" for every article in ``text``."""
    words = text.split(" ")
    for i in range(len(words) - 1):
        low = words[i].lower()
        if low in ("a", "an"):
            new = "an" if _wants_an(words[i + 1]) else "a"
            words[i] = new.capitalize() if words[i][0].isupper() else new
    return " ".join(words)


def _capitalize(text):
    return text[:1].upper() + text[1:]


# ---------------------------------------------------------------------------
# Sentiment: movie reviews
# ---------------------------------------------------------------------------

_SENT_POOLS = {
    "title": (
        "The Last Harbor", "Midnight in Lisbon", "Iron Orchard", "Paper Kingdoms",
        "The Glass Road", "Salt and Smoke", "A Winter Apart", "The Quiet Hours",
        "Northbound", "Little Fires at Dawn", "The Copper Crown", "Blue Static",
        "Ghosts of August", "The Long Fall", "Wildflower Season", "The Lantern Keeper",
        "Summer of the Hawk", "Broken Compass", "Neon Saints", "The Orchard House",
        "Hollow Creek", "Seven Bridges", "The Velvet Hour", "Storm Season",
        "All the Small Lights", "Kingfisher", "The Tin Soldier", "Emberfall",
        "Second Act", "The Cartographer", "Under a Paper Moon", "Dust and Thunder",
    ),
    "actor": (
        "Clara Hensley", "Marcus Delaney", "Sofia Reyes", "Tom Whitaker", "Ines Moreau",
        "David Okonkwo", "Hannah Brandt", "Leo Castellano", "Priya Raman",
        "Owen Gallagher", "Naomi Sato", "Jack Pemberton", "Elena Varga",
        "Samuel Achebe", "Greta Lindholm", "Ruben Ortega", "Maya Goldberg",
        "Felix Hartmann", "Amara Nwosu", "Daniel Kerr", "Rosalind Hayes", "Mateo Cruz",
    ),
    "director": (
        "Marta Lindqvist", "Julian Okafor", "Rosa Albrecht", "Theo Marchetti",
        "Agnes Kowalski", "Kenji Morimoto", "Lucia Ferreira", "Paul Devereux",
        "Nadia Haddad", "Simon Ashworth", "Ana Petrovic", "Victor Lemaire",
        "Oliver Stanhope", "Bianca Moretti",
    ),
    "composer": (
        "Henrik Aalto", "Mira Castell", "Jonah Blackwood", "Elif Demir",
        "Carlos Ibanez", "Yuki Tanabe", "Oren Weiss", "Beatrix Lowe",
    ),
    "film": (
        "film", "movie", "picture", "thriller", "comedy", "drama", "sequel", "remake",
        "romance", "western", "musical", "documentary", "biopic", "horror film",
        "period piece", "animated feature", "crime drama", "war film", "indie drama",
        "heist movie", "road movie", "coming-of-age story", "science fiction epic",
        "family film", "courtroom drama", "ghost story",
    ),
    "pos_adj": (
        "gripping", "moving", "hilarious", "charming", "beautiful", "stunning",
        "brilliant", "delightful", "thoughtful", "tender", "riveting", "witty",
        "gorgeous", "heartfelt", "clever", "exhilarating", "haunting", "warm",
        "smart", "confident", "luminous", "wonderful", "masterful", "absorbing",
        "satisfying", "joyous", "inventive", "sharp", "powerful", "rewarding",
        "superb", "fresh", "funny", "lovely", "compelling", "engaging", "terrific",
        "affecting", "elegant", "thrilling",
    ),
    "neg_adj": (
        "dull", "lifeless", "tedious", "boring", "clumsy", "bland", "forgettable",
        "messy", "shallow", "pretentious", "incoherent", "sluggish", "tiresome",
        "lazy", "predictable", "flat", "hollow", "overlong", "joyless", "muddled",
        "stale", "cheap", "grating", "limp", "dreary", "soulless", "ridiculous",
        "awful", "dreadful", "painful", "disappointing", "uninspired", "confused",
        "cliched", "exhausting", "tone-deaf", "charmless", "witless",
    ),
    "intens": (
        "truly", "utterly", "genuinely", "absolutely", "thoroughly", "remarkably",
        "simply", "really", "completely",
    ),
    "love_adv": ("absolutely", "really", "just", "truly", "honestly"),
    "pos_perf": (
        "fearless", "magnetic", "quietly devastating", "wonderfully understated",
        "luminous", "fiercely committed", "nuanced", "commanding", "superb",
        "razor-sharp", "heartbreaking", "brilliant", "terrific", "career-best",
        "beautifully judged", "electric",
    ),
    "neg_perf": (
        "wooden", "lifeless", "one-note", "hammy", "mannered", "shrill", "stiff",
        "unconvincing", "awkward", "flat", "embarrassing", "overwrought",
        "listless", "clumsy", "phoned-in", "bizarrely miscast",
    ),
    "role": (
        "a grieving father", "a small-town detective", "a retired boxer",
        "an ambitious young lawyer", "a washed-up rock star",
        "a lonely lighthouse keeper", "a con artist on the run",
        "a schoolteacher with a secret", "a war photographer", "an exhausted nurse",
        "a reluctant heir", "a chess prodigy", "a disgraced chef", "a single mother",
        "an aging spy", "a struggling novelist", "a mob accountant",
        "a ship's captain", "a country doctor", "a jazz pianist",
    ),
    "premise": (
        "two estranged sisters driving across the country",
        "a heist that goes wrong in every possible way",
        "a family reunion that slowly falls apart",
        "a jazz musician chasing one last gig",
        "a mining town after the mine closes",
        "a murder on an overnight train",
        "a teenage girl who joins a roller derby team",
        "an astronaut stranded on a distant moon",
        "a chef reopening her father's restaurant",
        "a small-town election turned upside down",
        "an old man teaching his grandson to sail",
        "a journalist investigating a cover-up",
        "two rival magicians in 1920s Vienna",
        "a haunted house that is not what it seems",
        "a robot learning to paint",
        "a soldier returning home after the war",
        "a wedding weekend where everything goes wrong",
        "a marathon runner training for one last race",
    ),
    "theme": (
        "grief", "friendship", "ambition", "class", "faith", "memory", "loyalty",
        "first love", "guilt", "family", "revenge", "growing old", "identity",
        "forgiveness", "fame", "loneliness",
    ),
    "pos_music": (
        "lush", "haunting", "gorgeous", "playful", "understated", "stirring",
        "hypnotic", "beautifully restrained", "soaring", "tender", "memorable",
    ),
    "neg_music": (
        "intrusive", "syrupy", "relentless", "generic", "bombastic", "forgettable",
        "overbearing", "cheesy", "shrill", "monotonous", "deafening",
    ),
    "music_style": (
        "old soul records", "vintage synths", "sparse piano", "folk songs",
        "1970s funk", "orchestral strings", "jazz standards", "punk anthems",
        "ambient electronics", "Motown classics", "choral music", "surf guitar",
    ),
    "pos_dir_q": (
        "real confidence", "a steady hand", "remarkable restraint",
        "tremendous energy", "a sharp eye for detail", "genuine warmth",
        "wit and precision", "a painter's eye", "total control",
    ),
    "pos_visual": (
        "stunning", "gorgeous", "breathtaking", "luminous", "striking", "ravishing",
        "crisp and elegant", "dreamlike",
    ),
    "neg_visual": (
        "murky", "drab", "ugly", "shaky and confusing", "flat", "garish", "muddy",
        "washed-out",
    ),
    "visual_detail": (
        "long, patient takes of the coastline", "neon-soaked night scenes",
        "golden-hour shots of the wheat fields", "claustrophobic close-ups",
        "sweeping aerial views of the city", "candlelit interiors",
        "snowy mountain vistas", "rain-slicked streets", "dusty desert highways",
    ),
    "runtime": ("92", "98", "104", "112", "118", "126", "131", "140", "152", "165"),
    "neg_pace": (
        "sluggish", "all over the place", "glacial", "choppy", "oddly rushed",
        "uneven", "plodding",
    ),
    "pos_end": (
        "devastating", "thrilling", "beautiful", "cathartic", "perfectly earned",
        "joyful", "quietly hopeful",
    ),
    "pos_score": ("8", "9", "10", "8.5", "9.5"),
    "neg_score": ("1", "2", "3", "2.5", "4"),
    "weak": (
        "a slightly rushed final act", "one underwritten supporting character",
        "a handful of clunky lines", "a subplot that goes nowhere",
        "a runtime that could lose ten minutes", "an overly neat epilogue",
    ),
    "good_bit": (
        "the opening scene is striking", "the costumes are gorgeous",
        "the score has a few nice moments", "one supporting performance is quite good",
        "the production design is impressive", "the first ten minutes show promise",
    ),
}
_SENT_STICKY = ("title", "actor", "director", "composer")

_SENT_SHORT = {
    "positive": (
        "a {pos_adj}, {pos_adj2} {film}",
        "{intens} {pos_adj} from start to finish",
        "not bad at all, actually.",
        "not bad at all. {C_pos_adj}, even.",
        "{actor} is {pos_adj} here.",
        "{C_pos_adj}, {pos_adj2} and {pos_adj3}.",
        "worth every minute.",
        "loved it. {C_pos_adj} {film}.",
        "a {intens} {pos_adj} {film}",
        "{title}: {intens} {pos_adj}.",
        "a {pos_adj} {film} with a {pos_music} score",
        "{C_pos_perf} acting, {pos_adj} story.",
        "not a dull moment in it.",
        "{pos_score}/10, {pos_adj} stuff.",
        "never boring, always {pos_adj}.",
        "the best {film} I've seen this year",
        "{love_adv} loved this {film}",
        "{actor} has never been better.",
        "go see {title}. {C_pos_adj}.",
        "{pos_adj} and {pos_adj2}. Recommended.",
        "what a {pos_adj} {film}!",
        "{pos_adj} script, {pos_music} soundtrack.",
    ),
    "negative": (
        "a {neg_adj}, {neg_adj2} {film}",
        "{intens} {neg_adj} from start to finish",
        "not good. not good at all.",
        "{actor} is {neg_perf} here.",
        "{C_neg_adj}, {neg_adj2} and {neg_adj3}.",
        "not worth the ticket price.",
        "hated it. {C_neg_adj} {film}.",
        "a {intens} {neg_adj} {film}",
        "{title}: {intens} {neg_adj}.",
        "a {neg_adj} {film} with a {neg_music} score",
        "{C_neg_perf} acting, {neg_adj} story.",
        "two hours I will never get back.",
        "{neg_score}/10, {neg_adj} stuff.",
        "never funny, always {neg_adj}.",
        "the worst {film} I've seen this year",
        "{love_adv} hated this {film}",
        "{actor} deserved better than this.",
        "skip {title}. {C_neg_adj}.",
        "{neg_adj} and {neg_adj2}. Avoid.",
        "what a {neg_adj} {film}.",
        "{neg_adj} script, {neg_music} soundtrack.",
        "not even {title}'s cast could save it.",
    ),
}

_SENT_OPENERS = {
    "positive": (
        "I had high hopes for {title}, and it delivered on every one of them.",
        "{title} is the kind of {film} that reminds you why you go to the movies.",
        "What a pleasant surprise {title} turned out to be.",
        "I caught {title} at a festival screening and I am still thinking about it.",
        "{director}'s {title} is a {pos_adj}, {pos_adj2} {film}.",
        "I walked into {title} knowing almost nothing about it and walked out grinning.",
    ),
    "negative": (
        "I had high hopes for {title}, and it let me down on every count.",
        "{title} is the kind of {film} that makes you wish you had stayed home.",
        "What a letdown {title} turned out to be.",
        "I caught {title} at a festival screening and nearly walked out.",
        "{director}'s {title} is a {neg_adj}, {neg_adj2} {film}.",
        "I walked into {title} with an open mind and walked out annoyed.",
    ),
    "neutral": (
        "I saw {title} last weekend with a few friends.",
        "I finally got around to watching {title}.",
        "{title}, the new {film} from {director}, opens this week.",
        "{director} returns with {title}, a {film} about {premise}.",
        "{title} follows {premise}.",
        "My partner picked {title} for movie night.",
    ),
}

_SENT_CLOSERS = {
    "positive": (
        "Highly recommended.", "I would happily watch it again tomorrow.",
        "{pos_score} out of 10.", "Go see it on the biggest screen you can find.",
        "Easily one of the best films of the year.", "Do not miss this one.",
        "Bring tissues.", "I am already planning a second viewing.",
        "It earns every bit of its praise.",
    ),
    "negative": (
        "Skip it.", "Save your money.", "{neg_score} out of 10, and that is being generous.",
        "Wait for it to show up on streaming, or better yet, don't bother.",
        "One of the worst films of the year.", "What a waste of a talented cast.",
        "I want those two hours back.", "Avoid.", "I cannot recommend it to anyone.",
    ),
}

_SENT_ASPECTS = {
    "positive": (
        ("acting", (
            "{actor} gives a {pos_perf} performance as {role}.",
            "{actor} is {pos_adj} as {role}, and the rest of the cast is nearly as good.",
            "As {role}, {actor} finds layers I did not know the character had.",
            "{actor} and {actor2} have terrific chemistry, and every scene between them crackles.",
            "The performances are uniformly {pos_adj}, right down to the smallest supporting parts.",
            "{actor} has never been better, and {actor2} steals every scene they are in.",
            "I could watch {actor} play {role} for another two hours.",
        )),
        ("plot", (
            "The story of {premise} is told with wit, patience and real heart.",
            "The script juggles {theme} and {theme2} without ever feeling heavy-handed.",
            "Every twist in the plot feels earned rather than manufactured.",
            "The screenplay is {pos_adj}, full of small surprises and lines worth quoting.",
            "It takes a simple premise, {premise}, and turns it into something {pos_adj}.",
            "The plot is tight and clever, and it trusts the audience to keep up.",
        )),
        ("music", (
            "The score by {composer} is {pos_music} and never overbearing.",
            "The soundtrack, built around {music_style}, fits every scene perfectly.",
            "{composer}'s music is {pos_music}, and I have been humming it all week.",
            "Even the soundtrack is a joy, full of {music_style} used in surprising ways.",
        )),
        ("direction", (
            "{director} directs with {pos_dir_q}, and it shows in every frame.",
            "This is easily {director}'s best work to date.",
            "{director} knows exactly when to hold a shot and when to cut away.",
            "You can feel how much {director} loves these characters.",
        )),
        ("pacing", (
            "At {runtime} minutes it flies by, and the pacing never sags.",
            "The pacing is patient but never slow, building steadily toward a {pos_end} finale.",
            "Not a single scene feels wasted.",
            "It moves like a freight train once the second act kicks in.",
        )),
        ("visuals", (
            "The cinematography is {pos_visual}, with {visual_detail}.",
            "Visually it is a treat, full of {visual_detail}.",
            "Some of the images, especially the {visual_detail}, will stay with me for a long time.",
        )),
        ("dialogue", (
            "The dialogue is sharp and often laugh-out-loud funny.",
            "The jokes land, and the emotional beats land even harder.",
            "Every conversation feels natural, funny and a little sad.",
        )),
        ("ending", (
            "The ending hit me harder than I expected, and I was not the only one in tears.",
            "The final scene is {pos_adj} and perfectly judged.",
            "It sticks the landing with a {pos_end} final act.",
        )),
        ("negation", (
            "It is not bad at all; in places it is genuinely {pos_adj}.",
            "I went in expecting very little and was not disappointed in the slightest.",
            "It is never boring, not for a single minute.",
            "The twist is not cheap, and the ending does not cheat.",
            "Nothing about it feels lazy or recycled.",
            "I did not check my watch once.",
        )),
        ("mild", (
            "It is not perfect, but it is {pos_adj} enough to recommend without hesitation.",
            "A couple of scenes drag a little, but overall it is a {pos_adj} and {pos_adj2} watch.",
            "It is a modest {film}, but a {pos_adj} one, and I enjoyed it more than I expected.",
            "The middle section sags slightly, yet the performances carry it through.",
            "The only real weakness is {weak}, and it hardly matters.",
        )),
    ),
    "negative": (
        ("acting", (
            "{actor} gives a {neg_perf} performance as {role}.",
            "{actor} seems completely lost as {role}.",
            "{actor} and {actor2} share no chemistry at all, and their scenes together are painful.",
            "The performances are {neg_perf} across the board.",
            "Even a performer as gifted as {actor} cannot save this material.",
            "{actor} delivers every line as if reading it off a cue card.",
        )),
        ("plot", (
            "The story of {premise} should have been compelling, but the script squanders it.",
            "The plot is full of holes you could drive a truck through.",
            "It tries to say something about {theme} and {theme2} and ends up saying nothing.",
            "Every twist is telegraphed twenty minutes in advance.",
            "The screenplay is {neg_adj}, stuffed with leaden exposition and dead-end subplots.",
            "By the halfway mark I had stopped caring what happened to anyone.",
        )),
        ("music", (
            "The score by {composer} is {neg_music} and tells you exactly what to feel in every scene.",
            "The soundtrack, wall-to-wall {music_style}, is {neg_music} and wildly out of place.",
            "{composer}'s music is so {neg_music} that it drowns out half the dialogue.",
        )),
        ("direction", (
            "{director} directs with all the subtlety of a car alarm.",
            "This is easily the weakest thing {director} has ever made.",
            "{director} seems to have no idea what kind of {film} this is supposed to be.",
            "It feels like {director} lost interest halfway through the shoot.",
        )),
        ("pacing", (
            "At {runtime} minutes it feels twice as long.",
            "The pacing is {neg_pace}, and the final act drags on forever.",
            "Whole scenes could be cut without losing anything.",
            "I checked my watch more times than I can count.",
        )),
        ("visuals", (
            "The cinematography is {neg_visual}, and half the action scenes are impossible to follow.",
            "It looks {neg_visual} and cheap, like a television pilot nobody picked up.",
            "Even the {visual_detail} look {neg_visual} and lifeless.",
        )),
        ("dialogue", (
            "The dialogue is so clunky that the audience laughed at the serious moments.",
            "None of the jokes land, and the dramatic scenes land even worse.",
            "Every conversation sounds like it was written by a committee.",
        )),
        ("ending", (
            "The ending is {neg_adj} and makes no sense at all.",
            "The final twist undoes everything that came before it.",
            "It limps toward an ending that simply stops rather than concludes.",
        )),
        ("negation", (
            "It is not funny, not scary, and not even interesting.",
            "There is not one memorable scene in the whole thing.",
            "Nothing here feels fresh or surprising.",
            "I did not laugh once, and I did not care once either.",
            "It never comes together, no matter how hard the cast tries.",
            "It is not terrible, just {neg_adj}, and that might be worse.",
        )),
        ("mild", (
            "It has a few nice moments, but overall it left me cold.",
            "It is watchable, I suppose, but {neg_adj} and gone from memory by the drive home.",
            "There is a decent {film} buried in here somewhere, but it never finds its way out.",
            "I wanted to like it more than I did, but it is simply too {neg_adj}.",
            "To be fair, {good_bit}, but it is not nearly enough.",
        )),
    ),
}


def _sentiment_aspects(rng, picker, label, k):
    categories = _SENT_ASPECTS[label]
    chosen = rng.sample(range(len(categories)), k)
    return [picker.fill(rng.choice(categories[i][1])) for i in chosen]


def _sentiment_opener(rng, picker, label):
    pool = _SENT_OPENERS["neutral"] if rng.random() < 0.4 else _SENT_OPENERS[label]
    return picker.fill(rng.choice(pool))


def _sentiment_text(rng, label, kind):
    picker = _Picker(rng, _SENT_POOLS, sticky=_SENT_STICKY)
    if kind == "short":
        text = picker.fill(rng.choice(_SENT_SHORT[label]))
        return text.lower() if rng.random() < 0.35 else _capitalize(text)

    if kind == "medium":
        mode = rng.random()
        if mode < 0.25:
            parts = [_sentiment_opener(rng, picker, label)]
            parts += _sentiment_aspects(rng, picker, label, 1)
        elif mode < 0.45:
            parts = _sentiment_aspects(rng, picker, label, 1)
            parts.append(picker.fill(rng.choice(_SENT_CLOSERS[label])))
        elif mode < 0.75:
            parts = _sentiment_aspects(rng, picker, label, 2)
        else:
            parts = _sentiment_aspects(rng, picker, label, 1)
        text = " ".join(parts)
        return text.lower() if rng.random() < 0.1 else text

    # long: 3-6 sentences
    n_sentences = rng.randint(4, 6)
    has_opener = rng.random() < 0.8
    has_closer = rng.random() < 0.7
    k = max(2, n_sentences - has_opener - has_closer)
    parts = []
    if has_opener:
        parts.append(_sentiment_opener(rng, picker, label))
    parts += _sentiment_aspects(rng, picker, label, k)
    if has_closer:
        parts.append(picker.fill(rng.choice(_SENT_CLOSERS[label])))
    return " ".join(parts)


# ---------------------------------------------------------------------------
# Topic: AG-News-style headlines and stories
# ---------------------------------------------------------------------------

# (country, capital, demonym) by region; a story's second country comes from
# the same region as its first, so "neighboring" countries are plausible.
_PLACES = (
    (
        ("France", "Paris", "French"), ("Germany", "Berlin", "German"),
        ("Ukraine", "Kyiv", "Ukrainian"), ("Poland", "Warsaw", "Polish"),
        ("Spain", "Madrid", "Spanish"), ("Italy", "Rome", "Italian"),
        ("Greece", "Athens", "Greek"), ("Sweden", "Stockholm", "Swedish"),
        ("Romania", "Bucharest", "Romanian"), ("Turkey", "Ankara", "Turkish"),
    ),
    (
        ("Japan", "Tokyo", "Japanese"), ("India", "New Delhi", "Indian"),
        ("Pakistan", "Islamabad", "Pakistani"), ("Indonesia", "Jakarta", "Indonesian"),
        ("South Korea", "Seoul", "South Korean"), ("the Philippines", "Manila", "Philippine"),
        ("Thailand", "Bangkok", "Thai"), ("Bangladesh", "Dhaka", "Bangladeshi"),
        ("Vietnam", "Hanoi", "Vietnamese"), ("Sri Lanka", "Colombo", "Sri Lankan"),
        ("Australia", "Canberra", "Australian"),
    ),
    (
        ("Kenya", "Nairobi", "Kenyan"), ("Egypt", "Cairo", "Egyptian"),
        ("Nigeria", "Abuja", "Nigerian"), ("Sudan", "Khartoum", "Sudanese"),
        ("Ethiopia", "Addis Ababa", "Ethiopian"), ("Morocco", "Rabat", "Moroccan"),
        ("Ghana", "Accra", "Ghanaian"), ("Lebanon", "Beirut", "Lebanese"),
    ),
    (
        ("Brazil", "Brasilia", "Brazilian"), ("Mexico", "Mexico City", "Mexican"),
        ("Peru", "Lima", "Peruvian"), ("Colombia", "Bogota", "Colombian"),
        ("Argentina", "Buenos Aires", "Argentine"), ("Chile", "Santiago", "Chilean"),
        ("Venezuela", "Caracas", "Venezuelan"), ("Haiti", "Port-au-Prince", "Haitian"),
        ("Canada", "Ottawa", "Canadian"),
    ),
)

_TOPIC_POOLS = {
    "day": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"),
    "month": (
        "January", "February", "March", "April", "May", "June", "July", "August",
        "September", "October", "November", "December",
    ),
    "num": ("3", "4", "5", "6", "7", "8", "10", "12", "14", "15", "20", "30"),
    "pct": ("1.2", "1.8", "2.4", "3.1", "4.5", "6", "8", "11", "12", "15", "22"),
    "small_pct": ("0.2", "0.3", "0.4", "0.6", "0.8", "1.1"),
    "few": ("three", "four", "five", "six"),
    "ordinal": ("second", "third", "fourth", "fifth", "sixth", "seventh"),
    "big_num": (
        "12,000", "20,000", "35,000", "50,000", "80,000", "100,000", "150,000", "200,000",
    ),
    "amount": ("150", "200", "320", "450", "600", "750", "880"),
    "crowd": ("41,000", "52,300", "38,500", "60,120", "27,800", "45,650"),
    # World
    "pol": (
        "Amina Diallo", "Stefan Novak", "Luis Carrasco", "Farid Rahimi",
        "Helena Sorensen", "Joseph Mwangi", "Anand Mehta", "Yusuf Demir",
        "Irina Volkova", "Carmen Ruiz", "Kwame Boateng", "Lars Eriksen",
    ),
    "issue": (
        "rising food prices", "corruption", "unemployment", "border security",
        "public health care", "energy shortages", "land reform", "inflation",
        "regional autonomy", "police reform", "housing costs",
    ),
    "adj_vote": ("closely watched", "bitterly fought", "peaceful", "tense", "historic"),
    "dip_issue": (
        "a disputed border region", "fishing rights", "the treatment of migrant workers",
        "a stalled peace agreement", "water rights along a shared river",
        "the detention of journalists", "nuclear inspections",
        "a long-running trade embargo",
    ),
    "mediator": (
        "the African Union", "the United Nations", "the European Union",
        "regional leaders", "church leaders", "Norway",
    ),
    "region_dir": ("northern", "southern", "eastern", "western", "central"),
    "mag": ("5.8", "6.1", "6.4", "6.9", "7.2", "7.5"),
    "policy": (
        "a new fuel tax", "cuts to public pensions", "a controversial media law",
        "plans to delay elections", "rising bread prices",
        "a proposed constitutional change", "the closure of state factories",
        "tighter internet controls",
    ),
    # Sports
    "team": (
        "Riverside Rovers", "Northport Mariners", "Eastfield Eagles",
        "Harbor City Hawks", "Granite Bay Giants", "Lakeside Lions",
        "Redwood Rangers", "Kingsbridge Knights", "Silver Lake Stars",
        "Ironvale Miners", "Coastline Comets", "Westbrook Wolves",
        "Fairhaven Falcons", "Summit City Blazers", "Marlow Mustangs", "Oakridge Owls",
    ),
    "player": (
        "Diego Alvarez", "Marcus Bell", "Kofi Mensah", "Luca Romano", "Ryan O'Connell",
        "Takumi Ito", "Jonas Berg", "Andre Silva", "Sam Fletcher", "Mikel Arrieta",
        "Tyrone Jackson", "Pavel Novotny", "Ethan Cole", "Yusuf Kaya",
    ),
    "coach": (
        "Frank Doherty", "Gianni Russo", "Bill Harrington", "Erik Solberg",
        "Manuel Ortiz", "Graham Pike",
    ),
    "tplayer": (
        "Elena Markova", "Sara Lindgren", "Nina Costa", "Julia Brandt", "Mei Chen",
        "Lucie Dvorak", "Hana Suzuki", "Isabel Ortiz", "Ana Kovac", "Chloe Martin",
    ),
    "tourney": (
        "the Australian Open", "Wimbledon", "the US Open", "the French Open",
        "the Madrid Masters", "the Paris Masters", "the Miami Open",
    ),
    "round": ("the quarterfinals", "the semifinals", "the final", "the fourth round"),
    "set_score": ("6-4, 6-3", "7-6, 6-4", "6-2, 3-6, 6-1", "4-6, 6-3, 7-5", "6-3, 6-7, 6-4"),
    "gplayer": (
        "Colin MacLeod", "Bryce Holloway", "Hideo Sato", "Shane Whitfield",
        "Anders Holm", "Pablo Ibarra",
    ),
    "golf_event": (
        "the Open Championship", "the Players Championship", "the Dubai Desert Classic",
        "the Scottish Open", "the Pacific Masters",
    ),
    "golf_round": ("8-under-par 64", "7-under-par 65", "6-under-par 66", "5-under-par 67"),
    "n_shot": ("one", "two", "three"),
    "golf_day": ("first", "second", "third"),
    "driver": ("Max Hartley", "Lorenzo Bianchi", "Felipe Duarte", "Oskar Lind", "James Whitmore"),
    "gp": ("Monaco", "Italian", "Brazilian", "Japanese", "Belgian", "Canadian", "Hungarian"),
    "gap": ("1.4", "3.8", "5.2", "8.9", "12.6"),
    "athlete": (
        "Grace Adeyemi", "Ivan Petrov", "Lena Fischer", "David Kiprono", "Ana Lima",
        "Jamal Wright", "Sofie Jansen",
    ),
    "event": (
        "100 meters", "marathon", "pole vault", "1,500 meters", "long jump",
        "400 meters hurdles", "200 meters freestyle", "triple jump", "heptathlon",
    ),
    "soccer_score": ("2-1", "3-0", "1-0", "4-2", "3-1", "2-0", "3-2"),
    "bb_score": ("98-91", "104-99", "112-108", "87-80", "101-94"),
    "base_score": ("5-3", "7-2", "4-1", "6-5", "3-2", "8-4"),
    "points": ("24", "28", "31", "35", "38", "41"),
    "rebounds": ("9", "11", "13", "15"),
    "minute": ("34", "52", "61", "70", "78"),
    "goals": ("11", "14", "17", "19", "22"),
    "standing": (
        "into first place", "within two points of the leaders",
        "out of the relegation zone", "level on points with the leaders",
        "into a playoff position",
    ),
    "standing_bad": (
        "at the bottom of the table", "in the relegation zone", "out of playoff contention",
    ),
    "stadium": ("Harbor Park", "Riverside Stadium", "Kingsway Arena", "Memorial Field"),
    "years": ("two", "three", "four", "five"),
    "position": ("striker", "midfielder", "defender", "winger", "goalkeeper"),
    "injury": (
        "knee injury", "broken ankle", "torn hamstring", "foot fracture",
        "shoulder injury", "Achilles injury",
    ),
    "season_goal": (
        "a playoff place", "winning the league", "avoiding relegation", "reaching the final",
    ),
    "recent": ("four of their last five games", "six of their last eight games", "three straight games"),
    # Business
    "company": (
        "Northwind Holdings", "Apex Motors", "Crestline Foods", "Meridian Bank",
        "Bluewater Energy", "Granite Insurance", "Evergreen Retail", "Pinecrest Steel",
        "Silverline Pharmaceuticals", "Oakmont Financial", "Redstone Mining",
        "Lakeshore Brewing", "Atlas Shipping", "Keystone Chemicals", "Harborview Hotels",
        "Continental Grain", "Westmark Paper", "Ridgeway Homes",
    ),
    "airline": ("Summit Airlines", "Pacific Crest Air", "Northern Star Airways", "Bluebird Air"),
    "ceo": (
        "Margaret Collins", "Robert Tanaka", "Helen Schroeder", "Victor Alvarez",
        "Patricia Nolan", "George Whitfield", "Sunita Kapoor", "Michael Brennan",
    ),
    "oil_price": ("48.20", "52.75", "55.10", "61.40", "67.90", "73.35"),
    "oil_risk": (
        "supply disruptions in the Gulf of Mexico", "unrest in major producing countries",
        "a strike at offshore platforms", "shrinking inventories", "pipeline outages",
        "strong demand from China",
    ),
    "oil_news": (
        "a government report showed a sharp drop in stockpiles",
        "OPEC signaled it would keep output unchanged",
        "a hurricane forced the shutdown of several refineries",
        "a major pipeline was damaged",
    ),
    "inv": ("2.1", "3.4", "4.8", "6.0"),
    "data": (
        "jobs", "retail sales", "manufacturing", "housing", "consumer confidence",
        "factory orders",
    ),
    "dow_points": ("85", "112", "140", "176", "210"),
    "rev": ("1.4", "2.7", "3.9", "5.2", "8.6"),
    "rev_climb": (
        "1.6 billion from $1.4 billion", "2.9 billion from $2.5 billion",
        "4.2 billion from $3.8 billion", "5.5 billion from $4.9 billion",
        "8.9 billion from $8.1 billion",
    ),
    "bn": ("1.2", "2.8", "4.5", "6.3", "9.1", "12.4"),
    "cost_item": ("raw material", "fuel", "labor", "shipping", "energy"),
    "jobs": ("96,000", "144,000", "187,000", "215,000", "262,000"),
    "unemp": ("4.9", "5.1", "5.4", "5.6"),
    "job_cuts": ("1,200", "2,500", "3,800", "5,000", "7,500", "10,000"),
    "plants": ("two", "three", "four", "five"),
    "staff": ("8,000", "12,000", "19,000", "26,000"),
    "currency": ("euro", "yen", "pound", "Swiss franc"),
    # Sci/Tech
    "tcompany": (
        "Quantix Systems", "Novasoft", "Brightwave Networks", "Cobalt Semiconductor",
        "Pixelforge", "Lumenar Labs", "Orbitex", "Vantage Computing", "Nimbus Software",
        "Helios Devices", "Datastream", "Cipherline Security", "Arcwave Mobile",
        "Tessellate Games",
    ),
    "university": (
        "Northfield University", "the Meridian Institute of Technology",
        "Lakeland University", "the Westbrook Research Institute",
        "Halden Technical University", "Pacific Coast University",
    ),
    "researcher": (
        "Anna Keller", "Rajesh Iyer", "Emily Sutton", "Tobias Lang", "Grace Mbeki",
        "Hiro Nakamura", "Laura Bianchi",
    ),
    "chip_kind": (
        "processor", "graphics chip", "memory chip", "mobile processor",
        "server chip", "wireless chip",
    ),
    "times": ("two", "three", "four", "five"),
    "device": (
        "handheld computer", "music player", "smartphone", "tablet", "digital camera",
        "laptop", "smartwatch", "e-book reader",
    ),
    "dev_feature": (
        "high-resolution touch screen", "brighter display", "faster wireless connection",
        "larger hard drive", "longer-lasting battery", "voice control system",
    ),
    "price": ("199", "249", "299", "399", "499"),
    "os": ("Windows", "Linux servers", "Mac computers", "mobile phones"),
    "vector": (
        "email attachments", "instant messaging links", "infected websites",
        "shared network drives", "USB drives",
    ),
    "software": (
        "web browser", "email program", "database software", "media player",
        "office suite", "operating system",
    ),
    "agency": (
        "NASA", "the European Space Agency", "the Japanese space agency",
        "the Indian space agency",
    ),
    "probe": ("Meridian", "Pathseeker", "Aurora", "Odyssey-2", "Seeker", "Kestrel"),
    "planet": (
        "Saturn's largest moon", "Mars", "Jupiter's icy moon Europa", "a distant comet",
        "Venus", "a small asteroid",
    ),
    "feature_astro": (
        "vast dunes and dry riverbeds", "a thick orange haze",
        "ice fractures hundreds of kilometers long",
        "craters that may hold frozen water", "towering volcanoes",
        "strange bright spots on the surface",
    ),
    "astro_obj": (
        "a new planet around a nearby star", "the most distant galaxy yet",
        "a massive black hole", "a rare stellar explosion",
        "water vapor on a distant planet", "a new moon around Neptune",
    ),
    "light_years": ("40", "120", "600", "2,000", "12 billion"),
    "sat_kind": (
        "weather", "communications", "navigation", "Earth-observation", "climate-monitoring",
    ),
    "launch_site": ("French Guiana", "Florida", "Kazakhstan", "southern India", "northern Japan"),
    "organism": (
        "the honeybee", "the chicken", "the rice plant", "the malaria parasite",
        "the chimpanzee", "the sea urchin", "the dog",
    ),
    "fossil_desc": (
        "a feathered dinosaur", "a giant crocodile-like reptile",
        "an early whale with legs", "a tiny primate", "a flying reptile",
        "an armored fish",
    ),
    "mya": ("47", "66", "90", "125", "230", "380"),
    "invention": (
        "a cheaper solar cell", "a battery that charges in minutes",
        "a robot that can climb stairs", "a plastic that conducts electricity",
        "an ultra-thin flexible display", "software that translates speech in real time",
        "a faster search algorithm", "a wireless sensor network for farms",
    ),
    "sw_feature": (
        "tabbed browsing", "built-in spam filtering", "faster desktop search",
        "support for online video", "automatic backup to the web", "a redesigned interface",
    ),
    "users": ("10", "25", "40", "60", "120"),
}
# Slots that must keep one value across the headline and the story.
_TOPIC_STICKY = (
    "day", "month", "pol", "policy", "team", "player", "coach", "tplayer", "gplayer",
    "driver", "athlete", "company", "airline", "ceo", "tcompany", "university",
    "researcher", "probe", "stadium", "agency", "device", "chip_kind", "organism",
    "fossil_desc", "invention", "software", "sw_feature", "astro_obj", "sat_kind",
    "planet", "tourney", "round", "event", "golf_event", "golf_round", "gp", "data",
    "currency", "pct", "oil_price", "job_cuts", "plants", "bn", "injury", "position",
    "years", "points", "soccer_score", "bb_score", "base_score", "region_dir",
    "dev_feature", "os", "vector",
)


def _frame(head, lead, more):
    return {"head": head, "lead": lead, "more": more}


_TOPIC_FRAMES = {
    "World": (
        _frame(
            (
                "{demonym} voters head to the polls",
                "Opposition claims victory in {country} election",
                "Polls close in {country} amid heavy turnout",
                "Tight race as {country} counts votes",
                "{country} goes to the polls",
                "{pol} claims win in {country} vote",
            ),
            (
                "Voters in {country} cast ballots on {day} in a {adj_vote} election widely seen as a referendum on the government's handling of {issue}.",
                "Opposition leader {pol} declared victory late on {day}, although official results from the electoral commission in {capital} were still days away.",
            ),
            (
                "Turnout was estimated at {pct} percent, the highest in more than a decade.",
                "International observers said the vote was largely free and fair, but noted long delays at polling stations in rural areas.",
                "Official results are expected by the end of the week.",
                "Supporters gathered outside party headquarters in {capital}, waving flags and chanting slogans.",
                "The campaign was dominated by debates over {issue} and {issue2}.",
                "Analysts said a coalition government was the most likely outcome.",
                "{pol} has promised to form a new cabinet within {num} days if confirmed as the winner.",
            ),
        ),
        _frame(
            (
                "{country} and {country2} agree to restore ties",
                "Foreign ministers meet in {capital} for talks",
                "{country} and {country2} hold border talks",
                "Leaders gather in {capital} for regional summit",
                "{country} signs border treaty with {country2}",
                "UN urges dialogue between {country} and {country2}",
            ),
            (
                "The foreign ministers of {country} and {country2} met in {capital} on {day} for talks aimed at easing tensions over {dip_issue}.",
                "{country} said on {day} it would restore full diplomatic relations with {country2}, ending a dispute over {dip_issue} that has lasted {num} years.",
            ),
            (
                "Both sides described the talks as frank and constructive.",
                "A joint statement said the two governments would reopen their embassies within {num} months.",
                "The dispute has disrupted trade and travel across the shared border.",
                "Diplomats said further rounds of negotiations were planned for later this year.",
                "The United Nations welcomed the agreement and urged both countries to implement it quickly.",
                "Critics at home accused the government of giving up too much.",
                "The {demonym2} delegation was led by foreign minister {pol}.",
            ),
        ),
        _frame(
            (
                "Ceasefire holds in {region_dir} {country}",
                "Fragile truce holds in {country}",
                "UN envoy hails truce in {country}",
                "Peace talks resume in {capital}",
                "Guns fall silent in {region_dir} {country}",
            ),
            (
                "A fragile ceasefire between government forces and rebel fighters in {region_dir} {country} appeared to be holding on {day}, {num} days after it was agreed in talks brokered by {mediator}.",
                "Negotiators from the government of {country} and rebel groups resumed peace talks in {capital} on {day}, a week after a ceasefire brokered by {mediator} took effect.",
            ),
            (
                "A rebel spokesman said his forces would respect the truce as long as the army did.",
                "Residents reported sporadic gunfire overnight but no major clashes.",
                "The conflict has displaced more than {big_num} people since it began.",
                "Humanitarian groups called for safe corridors to deliver food and medicine.",
                "Monitors from {mediator} will be deployed to verify that both sides withdraw their forces.",
                "Many families who fled the fighting have started to return to their villages.",
            ),
        ),
        _frame(
            (
                "{demonym} army launches offensive against insurgents",
                "Fighting flares in {region_dir} {country}",
                "UN envoy urges calm as fighting flares in {country}",
                "{demonym} troops push into rebel territory",
                "Clashes force thousands to flee in {country}",
            ),
            (
                "Government troops in {country} launched an offensive against insurgent positions in the {region_dir} provinces on {day}, the defense ministry in {capital} said.",
                "Heavy fighting broke out between the army and rebel fighters in {region_dir} {country} on {day}, forcing thousands of villagers to flee, aid workers said.",
            ),
            (
                "Aid agencies said thousands of civilians had fled the fighting in recent weeks.",
                "The UN Security Council is expected to discuss the situation later this week.",
                "The conflict has displaced more than {big_num} people since it began.",
                "Neighboring {country2} has closed its border crossings and reinforced its troops.",
                "A military spokesman said the operation would continue until the area was secured.",
                "Rebel leaders accused the army of shelling civilian areas, a charge the government denied.",
            ),
        ),
        _frame(
            (
                "Earthquake strikes {region_dir} {country}",
                "Strong quake rocks {region_dir} {country}",
                "Rescuers search for quake survivors in {country}",
                "Quake death toll climbs in {country}",
            ),
            (
                "A magnitude {mag} earthquake struck {region_dir} {country} on {day}, collapsing buildings and cutting power to several towns, officials in {capital} said.",
            ),
            (
                "Rescue teams were working through the night to pull survivors from the rubble.",
                "The government declared a state of emergency in the worst-hit provinces.",
                "The Red Cross said it was sending tents, blankets and clean water.",
                "At least {num} people were confirmed dead and dozens more were missing.",
                "Neighboring {country2} offered to send helicopters and medical teams.",
                "Several strong aftershocks rattled the region overnight.",
                "It was the deadliest earthquake to hit the country in {num} years.",
            ),
        ),
        _frame(
            (
                "Floods force thousands from homes in {country}",
                "{country} declares emergency after deadly floods",
                "Death toll rises after storms batter {country}",
                "Rivers burst banks across {region_dir} {country}",
            ),
            (
                "Heavy rains have forced more than {big_num} people from their homes in {country}, where rivers burst their banks after a week of storms.",
                "Floodwaters swept through towns across {region_dir} {country} on {day}, destroying bridges and crops and leaving thousands of families without shelter.",
            ),
            (
                "Rescue teams used boats to reach villages cut off by the rising water.",
                "The government declared a state of emergency in the worst-hit provinces.",
                "The Red Cross said it was sending tents, blankets and clean water.",
                "At least {num} people were confirmed dead and dozens more were missing.",
                "Forecasters warned that more rain was expected over the weekend.",
                "Officials in {capital} said the damage to farmland would take years to repair.",
            ),
        ),
        _frame(
            (
                "Thousands march in {capital} against {policy}",
                "Police clash with protesters in {capital}",
                "{demonym} opposition calls general strike",
                "Students rally in {capital} over {policy}",
                "Anger over {policy} spills into streets of {capital}",
                "Protests spread across {country}",
            ),
            (
                "Tens of thousands of people marched through the streets of {capital} on {day} to protest against {policy}, in the largest demonstration the city has seen in years.",
                "Police in {capital} used tear gas to disperse protesters who gathered outside parliament on {day} to denounce {policy}.",
            ),
            (
                "Organizers said the protests would continue until the government backed down.",
                "Several people were arrested, according to a police spokesman.",
                "The interior minister appealed for calm and promised an investigation into the violence.",
                "Shops and schools in the city center remained closed.",
                "Opposition leaders accused the government of ignoring public anger over {issue}.",
                "The protests began last month after the measure was announced in a televised address.",
            ),
        ),
        _frame(
            (
                "UN appeals for aid as drought grips {country}",
                "Hunger threatens millions in {country}, UN warns",
                "Drought pushes {country} toward famine",
                "Donors pledge food aid for {country}",
            ),
            (
                "The United Nations appealed on {day} for emergency funding to help millions of people facing hunger in {country}, where a severe drought has destroyed crops and killed livestock.",
            ),
            (
                "The World Food Programme said it had received less than half the money it needs this year.",
                "Donor countries pledged more than {amount} million dollars at a meeting in {capital2}.",
                "Children and the elderly are most at risk, according to relief agencies.",
                "The crisis has been made worse by years of political instability.",
                "Food prices in local markets have doubled since the rains failed.",
                "The government in {capital} has asked farmers to share water supplies.",
            ),
        ),
        _frame(
            (
                "Refugees pour into {country2} from {country}",
                "Thousands flee {country} as violence spreads",
                "{country2} opens border to refugees from {country}",
                "UN warns of refugee crisis on {country} border",
            ),
            (
                "Thousands of refugees have crossed from {country} into neighboring {country2} in recent days, fleeing violence and food shortages, aid workers said.",
            ),
            (
                "Camps near the border are already overcrowded, and aid groups warned of disease outbreaks.",
                "Officials in {capital2} said they would keep the border open for now.",
                "The UN refugee agency said it was flying in tents and medical supplies.",
                "Many of the new arrivals are women and children who walked for days.",
                "Donor countries pledged more than {amount} million dollars at a meeting in {capital2}.",
                "The government in {capital} denied that its forces had targeted civilians.",
            ),
        ),
        _frame(
            (
                "{demonym} prime minister reshuffles cabinet",
                "{demonym} leader shakes up government",
                "{country} names new finance minister",
                "Cabinet shake-up in {capital}",
            ),
            (
                "The prime minister of {country} replaced {num} ministers on {day} in a cabinet reshuffle aimed at reviving the government's fortunes ahead of next year's elections.",
            ),
            (
                "The changes include a new finance minister and a new minister of the interior.",
                "Opposition parties dismissed the move as a cosmetic change.",
                "Political analysts in {capital} said the government's position remained fragile.",
                "{pol}, the new interior minister, said the team would focus on {issue}.",
                "The reshuffle follows a string of corruption scandals and poor local election results.",
                "The new ministers will be sworn in at the presidential palace later this week.",
            ),
        ),
        _frame(
            (
                "{demonym} parliament approves new constitution",
                "{demonym} lawmakers back sweeping reforms",
                "{country} set for referendum on reforms",
                "Parliament in {capital} passes reform package",
            ),
            (
                "Lawmakers in {country} narrowly approved a package of constitutional reforms on {day} after months of heated debate in parliament in {capital}.",
            ),
            (
                "The measure must now be approved in a national referendum.",
                "The reforms would limit presidents to two terms and strengthen the courts.",
                "Opposition parties walked out of the chamber before the final vote.",
                "Thousands of people followed the debate on large screens set up outside parliament.",
                "{pol}, who led the campaign for the changes, called the vote a historic day.",
                "Diplomats from {country2} and other neighbors welcomed the outcome.",
            ),
        ),
    ),
    "Sports": (
        _frame(
            (
                "{team} beat {team2} {soccer_score}",
                "{player} scores twice as {team} top {team2}",
                "Late goal lifts {team} past {team2}",
                "{team} climb table with win over {team2}",
                "{player} stars in {team} victory",
                "{team} extend winning run",
            ),
            (
                "{player} scored twice as the {team} beat the {team2} {soccer_score} on {day} night to move {standing}.",
                "A stoppage-time goal from {player} gave the {team} a {soccer_score} victory over the {team2} on {day}, lifting them {standing}.",
            ),
            (
                "{coach}, the {team} manager, praised his side's resilience after a difficult first half.",
                "The {team2} were reduced to ten men after {minute} minutes when their captain was sent off.",
                "The result leaves the {team2} {num} points adrift of the top four.",
                "It was the {team}'s {ordinal} straight win in all competitions.",
                "A crowd of {crowd} watched the match at {stadium}.",
                "{player} now has {goals} goals this season, more than anyone else in the league.",
                "The {team} goalkeeper made several fine saves to protect the lead.",
            ),
        ),
        _frame(
            (
                "{player} leads {team} past {team2}",
                "{team} rally to beat {team2} in overtime",
                "{team} snap losing streak against {team2}",
                "{player} scores {points} in {team} win",
                "{team} hold off {team2}",
            ),
            (
                "{player} scored {points} points and grabbed {rebounds} rebounds as the {team} beat the {team2} {bb_score} on {day} night.",
                "The {team} overcame a slow start to beat the {team2} {bb_score} on {day}, with {player} scoring {points} points.",
            ),
            (
                "The {team} trailed by {num} points at halftime before a big third quarter turned the game around.",
                "{coach} said his team played its best defense of the season.",
                "The {team2} have now lost {recent}.",
                "{player2} added {points2} points off the bench.",
                "The game went to overtime after a buzzer-beater forced a tie in regulation.",
                "The win moved the {team} into a tie for first place in their division.",
            ),
        ),
        _frame(
            (
                "{team} edge {team2} {base_score}",
                "{player} homers twice in {team} win",
                "{team} beat {team2} behind strong pitching",
                "{team} complete sweep of {team2}",
                "{player} powers {team} past {team2}",
            ),
            (
                "{player} hit a two-run homer in the eighth inning to lift the {team} over the {team2} {base_score} on {day} night.",
                "{player} allowed just three hits over seven innings and the {team} beat the {team2} {base_score} on {day}.",
            ),
            (
                "The loss dropped the {team2} {num} games behind in the division race.",
                "{player2} struck out eight batters in six strong innings.",
                "The game was delayed for an hour by rain in the fifth inning.",
                "A sellout crowd of {crowd} saw the {team} clinch the series.",
                "The {team} bullpen retired the last nine batters in order.",
                "It was the {team}'s {ordinal} consecutive victory at home.",
            ),
        ),
        _frame(
            (
                "{tplayer} advances at {tourney}",
                "{tplayer} beats {tplayer2} at {tourney}",
                "{tplayer} into {round} at {tourney}",
                "{tplayer} battles past {tplayer2}",
                "{tplayer} ousts top seed {tplayer2}",
            ),
            (
                "{tplayer} beat {tplayer2} {set_score} on {day} to reach {round} of {tourney}.",
                "Seventh seed {tplayer} needed nearly three hours to get past {tplayer2} {set_score} at {tourney} on {day}.",
            ),
            (
                "{tplayer2} struggled on serve throughout the match and made more than forty unforced errors.",
                "{tplayer} saved {few} break points in the second set.",
                "Rain delayed the start of play on the outside courts by more than an hour.",
                "It was {tplayer}'s first win over {tplayer2} in {few} meetings.",
                "{tplayer} will face {tplayer3} in the next round.",
                "The crowd on center court gave both players a standing ovation.",
            ),
        ),
        _frame(
            (
                "{gplayer} takes lead at {golf_event}",
                "{gplayer} shoots {golf_round} at {golf_event}",
                "{gplayer} surges clear at {golf_event}",
                "Winds blow field apart at {golf_event}",
            ),
            (
                "{gplayer} fired a {golf_round} on {day} to take a {n_shot}-shot lead after the {golf_day} round of {golf_event}.",
            ),
            (
                "{gplayer2} and {gplayer3} are tied for second place.",
                "Strong winds made scoring difficult for much of the afternoon.",
                "{gplayer} made seven birdies and just one bogey.",
                "The defending champion missed the cut by a single stroke.",
                "{gplayer} is chasing a first major title after several near misses.",
                "A long birdie putt on the final hole drew the loudest cheer of the day.",
            ),
        ),
        _frame(
            (
                "{driver} wins {gp} Grand Prix",
                "{driver} cruises to victory in {gp} Grand Prix",
                "{driver} takes {gp} Grand Prix from pole",
                "{driver} extends championship lead",
            ),
            (
                "{driver} won the {gp} Grand Prix on {day}, finishing {gap} seconds ahead of {driver2} to extend his lead in the drivers' championship.",
            ),
            (
                "{driver2} recovered from a poor start to claim second place.",
                "A safety car was deployed after a crash on the opening lap.",
                "A two-stop strategy proved decisive in the closing laps.",
                "The championship now moves on to the {gp2} Grand Prix in two weeks.",
                "{driver3} retired with engine trouble after {num} laps.",
                "Track temperatures soared, putting heavy strain on the tires.",
            ),
        ),
        _frame(
            (
                "{athlete} breaks world record in {event}",
                "{athlete} wins world title in {event}",
                "{demonym} star takes gold in {event}",
                "{athlete} storms to {event} victory",
            ),
            (
                "{athlete} of {country} won the {event} at the world championships on {day}, beating a strong field to claim a first global title.",
                "{athlete} set a world record in the {event} on {day}, delighting a crowd of {crowd} at the national stadium.",
            ),
            (
                "{athlete} had finished fourth in the same event two years ago.",
                "The crowd rose to its feet as the result flashed on the scoreboard.",
                "{athlete2} took silver and {athlete3} won bronze.",
                "It was {country}'s {ordinal} medal of the championships.",
                "Officials said the record would be ratified once routine doping tests were completed.",
                "{athlete} said the victory was the reward for years of hard training.",
            ),
        ),
        _frame(
            (
                "{team} sign {player} on {years}-year deal",
                "{team} land {position} {player}",
                "{player} joins {team} from {team2}",
                "{team} complete {player} transfer",
            ),
            (
                "The {team} have signed {position} {player} from the {team2} on a {years}-year contract, the club announced on {day}.",
            ),
            (
                "The fee was not disclosed but was reported to be a club record.",
                "{player} scored {goals} goals last season.",
                "{coach} said the new signing would add pace and experience to the squad.",
                "The {team2} had rejected two earlier bids.",
                "{player} is expected to make a debut against the {team3} next weekend.",
                "Fans gathered outside the training ground to welcome the new arrival.",
            ),
        ),
        _frame(
            (
                "{player} out for season with {injury}",
                "{team} lose {player} to {injury}",
                "Injury blow for {team}",
            ),
            (
                "{player} will miss the rest of the season with a {injury}, the {team} said on {day}, a major blow to their hopes of {season_goal}.",
            ),
            (
                "Scans confirmed the extent of the damage after the player limped off in the first half.",
                "{coach} said the team would not rush to sign a replacement.",
                "{player} had been the team's leading scorer this season.",
                "Surgery is scheduled for next week.",
                "The {team} have already lost {recent}.",
                "Teammates said they would dedicate the rest of the season to their injured colleague.",
            ),
        ),
        _frame(
            (
                "{team} fire coach {coach}",
                "{team} part ways with {coach} after slump",
                "{coach} sacked by struggling {team}",
                "{team} name {coach2} as new manager",
            ),
            (
                "The {team} fired coach {coach} on {day} after a run of {num} straight defeats left the club {standing_bad}, and named {coach2} as his replacement.",
            ),
            (
                "{coach2} has signed a contract until the end of next season.",
                "The club's owner thanked {coach} for three years of service.",
                "Fans had called for a change after a heavy home defeat last weekend.",
                "{coach2} will take charge for the first time against the {team2} on Saturday.",
                "Several senior players are said to have lost confidence in the old tactics.",
                "The {team} have won only {num} of their matches this season.",
            ),
        ),
    ),
    "Business": (
        _frame(
            (
                "Oil prices climb as supply worries mount",
                "Crude jumps on supply fears",
                "Oil tops ${oil_price} a barrel",
                "Oil prices rise for third straight day",
                "Crude futures surge as stockpiles shrink",
            ),
            (
                "Crude futures rose {pct} percent to ${oil_price} a barrel on {day} as traders worried about {oil_risk}.",
                "Oil prices climbed on {day}, with benchmark crude settling at ${oil_price} a barrel, after {oil_news}.",
            ),
            (
                "Analysts said prices could rise further if supplies remain tight heading into winter.",
                "Heating oil and gasoline futures also moved higher.",
                "Producers have so far resisted calls to increase output.",
                "The rise in energy costs has added to worries about inflation.",
                "Shares of {company} and other energy producers gained in early trading.",
                "Inventories fell by {inv} million barrels last week, according to government data.",
            ),
        ),
        _frame(
            (
                "Oil prices slide as stockpiles grow",
                "Crude drops on demand worries",
                "Oil falls for fourth session",
                "Oil slips below ${oil_price} a barrel",
            ),
            (
                "Crude futures fell {pct} percent to ${oil_price} a barrel on {day} after data showed inventories rising faster than expected.",
            ),
            (
                "Traders said demand from refiners had slowed in recent weeks.",
                "Lower fuel prices could offer relief to airlines and trucking companies.",
                "Some analysts expect prices to stabilize once winter demand picks up.",
                "Shares of {company} fell along with those of other energy producers.",
                "Producers are due to meet next month to review output quotas.",
                "Gasoline futures also declined, pointing to cheaper prices at the pump.",
            ),
        ),
        _frame(
            (
                "Stocks rally on upbeat {data} data",
                "Wall Street ends higher as investors cheer earnings",
                "Blue chips close at two-month high",
                "Shares rise on strong {data} report",
                "Stocks climb as bond yields ease",
            ),
            (
                "Stocks rose on {day} as a stronger-than-expected {data} report eased concerns about the economy, with the Dow Jones industrial average gaining {dow_points} points.",
            ),
            (
                "The broader S&P 500 index rose {small_pct} percent.",
                "Financial and industrial shares led the gains.",
                "Trading volume was light ahead of the holiday weekend.",
                "Bond prices fell as investors moved into riskier assets.",
                "Shares of {company} rose {pct} percent after the company raised its profit forecast.",
                "Analysts cautioned that the rally could fade if oil prices keep climbing.",
            ),
        ),
        _frame(
            (
                "Stocks fall on weak {data} report",
                "Wall Street slips as rate worries weigh",
                "Shares slide as oil prices climb",
                "Stocks end lower after choppy session",
            ),
            (
                "Stocks fell sharply on {day} after a weaker-than-expected {data} report and rising oil prices rattled investors, with the Dow losing {dow_points} points.",
            ),
            (
                "The Nasdaq composite index lost {small_pct} percent.",
                "Investors moved into government bonds, pushing yields lower.",
                "Shares of {company} tumbled {pct} percent after the company warned that profits would fall short of forecasts.",
                "Traders said worries about interest rates and energy costs kept buyers on the sidelines.",
                "Declining stocks outnumbered advancing ones by about two to one.",
                "The dollar weakened against the {currency} as the selling spread.",
            ),
        ),
        _frame(
            (
                "{company} profit rises {pct} percent",
                "{company} beats forecasts as sales jump",
                "{company} quarterly earnings top estimates",
                "{company} raises full-year outlook",
                "Strong demand lifts {company} profit",
            ),
            (
                "{company} said on {day} that quarterly profit rose {pct} percent to ${amount} million, helped by strong sales and lower costs, beating analysts' estimates.",
            ),
            (
                "Revenue climbed to ${rev_climb} a year earlier.",
                "Chief executive {ceo} said demand remained strong in all major markets.",
                "The company raised its forecast for the full year.",
                "Shares rose {pct2} percent in after-hours trading.",
                "Analysts surveyed by research firms had expected a smaller increase.",
                "The company also announced a share buyback of up to ${amount2} million.",
            ),
        ),
        _frame(
            (
                "{company} misses quarterly forecasts",
                "{company} profit falls on weak demand",
                "{company} shares slump after profit warning",
                "{company} cuts outlook as costs rise",
            ),
            (
                "{company} reported a {pct} percent drop in quarterly profit on {day}, citing weaker demand and higher {cost_item} costs.",
            ),
            (
                "The company cut its outlook for the rest of the year.",
                "Shares fell {pct2} percent in early trading.",
                "{ceo}, the chief executive, said the company would reduce spending and review underperforming units.",
                "Analysts said the results were the weakest in {num} years.",
                "Revenue slipped to ${rev} billion.",
                "The board said the quarterly dividend would be maintained.",
            ),
        ),
        _frame(
            (
                "{company} to buy {company2} for ${bn} billion",
                "{company} bids ${bn} billion for {company2}",
                "{company} makes offer for rival {company2}",
                "{company} and {company2} announce merger",
            ),
            (
                "{company} said on {day} it had agreed to buy {company2} for ${bn} billion in cash and stock, a deal that would create one of the largest companies in its industry.",
            ),
            (
                "The offer represents a premium of {pct} percent over {company2}'s closing share price.",
                "The deal is subject to approval by regulators and shareholders.",
                "{ceo} said the combination would save about ${amount} million a year in costs.",
                "Analysts said other bidders could still emerge.",
                "The combined company would employ more than {big_num} people.",
                "Shares of {company2} jumped in pre-market trading.",
            ),
        ),
        _frame(
            (
                "Central bank raises interest rates",
                "{demonym} central bank lifts rates",
                "Policymakers raise rates by a quarter point",
                "Rate hike signals confidence in economy",
                "Central bank tightens as economy grows",
            ),
            (
                "The central bank raised its benchmark interest rate by a quarter of a percentage point on {day}, saying the economy was growing fast enough to absorb higher borrowing costs.",
                "Policymakers voted on {day} to raise short-term interest rates, the {ordinal} increase this year, and signaled that more increases could follow.",
            ),
            (
                "Policymakers said inflation remained under control but warned about rising energy prices.",
                "Most economists had expected the move.",
                "Mortgage rates are likely to edge higher in the coming weeks.",
                "The decision pushed the currency to a {num}-month high.",
                "Bank shares rose on expectations of wider lending margins.",
                "Some economists warned that higher rates could slow consumer spending.",
            ),
        ),
        _frame(
            (
                "Employers add more jobs than expected",
                "Jobless claims fall to lowest level in months",
                "Unemployment rate dips in {month}",
                "Hiring picks up as economy gains steam",
            ),
            (
                "Employers added {jobs} jobs in {month}, the Labor Department said on {day}, and the unemployment rate fell to {unemp} percent.",
            ),
            (
                "Economists had forecast a smaller gain.",
                "Average hourly earnings rose {small_pct} percent from the previous month.",
                "Gains were strongest in construction, health care and retail.",
                "The report eased fears that the recovery was losing steam.",
                "Manufacturing employment was little changed.",
                "Stock futures rose after the figures were released.",
            ),
        ),
        _frame(
            (
                "{company} to cut {job_cuts} jobs",
                "{company} announces restructuring plan",
                "{company} to close {plants} plants",
                "{company} slashes costs as sales slow",
            ),
            (
                "{company} said on {day} it would cut about {job_cuts} jobs and close {plants} plants over the next two years as part of a restructuring aimed at saving ${amount} million annually.",
            ),
            (
                "The cuts represent about {pct} percent of the company's workforce.",
                "Unions said they would fight the closures.",
                "{ceo} said the company needed to adapt to weaker demand and rising costs.",
                "The company will take a one-time charge of ${amount2} million in the current quarter.",
                "Shares rose on the news as investors welcomed the cost savings.",
                "Local officials said they would try to find a buyer for the affected sites.",
            ),
        ),
        _frame(
            (
                "Retail sales rise as shoppers return",
                "Consumer spending picks up in {month}",
                "Retailers report strong holiday sales",
                "Shoppers lift retail sales",
            ),
            (
                "Retail sales rose {small_pct} percent in {month}, the Commerce Department said on {day}, as consumers spent more on cars, clothing and furniture.",
            ),
            (
                "Excluding autos, sales rose {small_pct2} percent.",
                "Retailers including {company} reported strong store traffic.",
                "Economists said rising wages and lower gasoline prices helped.",
                "Consumer spending accounts for about two-thirds of economic activity.",
                "Sales at building material stores posted the biggest gain.",
                "Department stores were the only category to show a decline.",
            ),
        ),
        _frame(
            (
                "{airline} files for bankruptcy protection",
                "{airline} seeks protection from creditors",
                "Fuel costs push {airline} into bankruptcy",
            ),
            (
                "{airline} filed for Chapter 11 bankruptcy protection on {day}, saying high fuel costs and fierce competition from low-cost carriers had left it unable to pay its debts.",
            ),
            (
                "The airline said flights would operate normally during the restructuring.",
                "It has secured ${amount} million in financing to keep operating.",
                "Unions representing pilots and flight attendants said they were prepared to negotiate.",
                "The carrier employs about {staff} people.",
                "Several other carriers have sought bankruptcy protection in recent years.",
                "Shares of the airline were suspended from trading.",
            ),
        ),
        _frame(
            (
                "Dollar slips against the {currency}",
                "Dollar falls to {num}-month low",
                "Currency traders sell dollars on deficit worries",
            ),
            (
                "The dollar fell against the {currency} on {day} as traders bet that a widening trade deficit would keep pressure on the currency.",
            ),
            (
                "A weaker dollar makes exports cheaper but raises the cost of imported goods.",
                "Gold prices rose as investors sought a safe haven.",
                "Traders said central bank intervention was unlikely in the near term.",
                "The trade deficit widened to a record in {month}.",
                "Analysts expect further losses if interest rates stay low.",
                "The {currency2} also gained against the dollar.",
            ),
        ),
    ),
    "Sci/Tech": (
        _frame(
            (
                "{tcompany} unveils faster {chip_kind}",
                "New {chip_kind} promises longer battery life",
                "{tcompany} shows off next-generation {chip_kind}",
                "{tcompany} claims big speed gain for new chip",
            ),
            (
                "{tcompany} on {day} unveiled a new {chip_kind} that it says runs up to {times} times faster than its previous generation while using less power.",
            ),
            (
                "The chip uses a new manufacturing process that packs more transistors into a smaller area.",
                "Samples will ship to computer makers later this year, with products expected early next year.",
                "Engineers said the design also reduces heat, allowing for thinner laptops.",
                "The company faces stiff competition from {tcompany2} in the same market.",
                "The new design includes two processing cores on a single piece of silicon.",
                "Independent benchmark tests have not yet been published.",
            ),
        ),
        _frame(
            (
                "{tcompany} launches new {device}",
                "{tcompany} unveils {device} with {dev_feature}",
                "New {device} from {tcompany} hits stores",
                "Hands on with the new {tcompany} {device}",
            ),
            (
                "{tcompany} introduced a new {device} on {day} with a {dev_feature}, hoping to win over customers who have stuck with older models.",
            ),
            (
                "The {device} will go on sale in {month} for ${price}.",
                "Reviewers who tested early units praised the screen but criticized the software.",
                "The device runs an updated version of the company's operating system.",
                "It can also sync photos and music wirelessly with a home computer.",
                "{tcompany2} is expected to launch a competing product later this year.",
                "The company says the battery lasts up to ten hours on a single charge.",
            ),
        ),
        _frame(
            (
                "New worm targets {os} users",
                "Security experts warn of fast-spreading worm",
                "Worm spreads through {vector}",
                "Antivirus firms race to stop new worm",
            ),
            (
                "A new computer worm that spreads through {vector} has infected thousands of machines running {os}, security researchers warned on {day}.",
            ),
            (
                "Users are being urged to update their software and antivirus programs immediately.",
                "The worm opens a back door that lets attackers use infected machines to send spam.",
                "{tcompany2}, which sells antivirus software, raised its threat rating to high.",
                "Corporate networks were hit hardest, according to early estimates.",
                "The attack code was posted on a hacker forum over the weekend.",
                "Variants of the worm disguise themselves as harmless picture files.",
            ),
        ),
        _frame(
            (
                "{tcompany} patches critical security flaw",
                "Hackers could exploit hole in {software}",
                "{tcompany} fixes serious bug in {software}",
                "Security patch plugs {software} hole",
            ),
            (
                "{tcompany} released a patch on {day} for a critical flaw in its {software} that could let attackers take control of a computer remotely.",
            ),
            (
                "Users are being urged to install the update immediately.",
                "Experts said the flaw was discovered by an independent researcher who reported it privately.",
                "There have been no reports of the flaw being exploited so far.",
                "The company said the problem affects all recent versions of the program.",
                "Security firms warned that attack code could appear within days now that the fix is public.",
                "The update also closes several less serious holes.",
            ),
        ),
        _frame(
            (
                "{probe} probe sends back images of {planet}",
                "Spacecraft gets close look at {planet}",
                "First close-up pictures of {planet} released",
                "Probe reveals surprises on {planet}",
            ),
            (
                "The {probe} spacecraft, operated by {agency}, sent back its first close-up images of {planet} on {day}, revealing {feature_astro}.",
            ),
            (
                "Mission scientists said the pictures were sharper than they had dared hope.",
                "The spacecraft was launched {num} years ago and has traveled more than a billion kilometers.",
                "Data from the probe's instruments will take weeks to analyze.",
                "Researchers hope the findings will shed light on how the solar system formed.",
                "The probe will make {num} more flybys over the next two years.",
                "{researcher}, a planetary scientist on the mission team, called the images breathtaking.",
            ),
        ),
        _frame(
            (
                "Astronomers spot {astro_obj}",
                "Telescope captures {astro_obj}",
                "Scientists detect {astro_obj}",
            ),
            (
                "Astronomers using a large telescope in Chile have found {astro_obj}, according to a study published on {day} in a leading scientific journal.",
            ),
            (
                "The discovery was made using a technique that measures tiny changes in starlight.",
                "Further observations are planned to confirm the finding.",
                "{researcher} of {university}, who led the team, said the result surprised everyone.",
                "The object lies about {light_years} light-years from Earth.",
                "Scientists say such discoveries help refine models of how planets and galaxies form.",
                "The team used computer simulations to rule out other explanations.",
            ),
        ),
        _frame(
            (
                "Rocket carrying {sat_kind} satellite lifts off",
                "New {sat_kind} satellite reaches orbit",
                "Launch puts {sat_kind} satellite into orbit",
            ),
            (
                "A rocket carrying a new {sat_kind} satellite lifted off on {day} from a launch site in {launch_site}, placing the spacecraft into orbit about {num} minutes later.",
            ),
            (
                "Engineers will spend several weeks testing the satellite's instruments.",
                "The satellite is expected to operate for at least {num} years.",
                "The launch had been delayed twice by high winds.",
                "The satellite will transmit data to ground stations around the world.",
                "It was the {ordinal} successful launch this year for the rocket's operator.",
                "Solar panels on the spacecraft unfolded as planned shortly after separation.",
            ),
        ),
        _frame(
            (
                "Scientists map genome of {organism}",
                "Genome of {organism} decoded",
                "Researchers sequence DNA of {organism}",
            ),
            (
                "An international team of scientists said on {day} that it had decoded the genome of {organism}, a project that took {num} years and involved hundreds of researchers.",
            ),
            (
                "The genetic map could help both breeders and medical researchers.",
                "The researchers identified thousands of genes that had not been described before.",
                "The data will be made freely available to scientists worldwide.",
                "{researcher} of {university} said the work would speed up research on disease resistance.",
                "Sequencing costs have fallen sharply in recent years, making such projects possible.",
                "Comparisons with other species could reveal how key traits evolved.",
            ),
        ),
        _frame(
            (
                "Fossil of {fossil_desc} found in {country}",
                "Scientists unearth {fossil_desc}",
                "{fossil_desc} fossil stuns researchers",
            ),
            (
                "Paleontologists working in {country} have unearthed the fossilized remains of {fossil_desc} that lived about {mya} million years ago, according to a report published on {day}.",
            ),
            (
                "The bones were remarkably well preserved in volcanic ash.",
                "The find could change ideas about how the animals evolved.",
                "{researcher}, who led the dig, said the team spent {num} weeks excavating the site.",
                "The specimen will go on display at a national museum next year.",
                "Researchers used CT scans to study the skull without damaging it.",
                "The site has yielded several other important fossils in recent years.",
            ),
        ),
        _frame(
            (
                "Researchers develop {invention}",
                "Engineers build {invention}",
                "{university} team creates {invention}",
            ),
            (
                "Researchers at {university} say they have developed {invention}, a breakthrough described on {day} in a leading scientific journal.",
            ),
            (
                "The team hopes to license the technology to manufacturers within {num} years.",
                "Early tests showed the prototype worked reliably in the laboratory.",
                "{researcher} said the next step is to make the technology cheaper to produce.",
                "The project was funded by a government research grant.",
                "Other experts called the results promising but said more work was needed.",
                "The researchers have filed for a patent on the design.",
            ),
        ),
        _frame(
            (
                "{tcompany} releases update to {software}",
                "{tcompany} adds {sw_feature} to {software}",
                "New {software} from {tcompany} now available",
                "{tcompany} opens its software to developers",
            ),
            (
                "{tcompany} on {day} released a new version of its {software}, adding {sw_feature} and fixing dozens of bugs reported by users.",
            ),
            (
                "The update is free for existing users and can be downloaded from the company's website.",
                "Early reviews praised the new features but said the program still uses too much memory.",
                "The company says its software now has more than {users} million users.",
                "Rival {tcompany2} is expected to release a competing product later this year.",
                "Developers will be able to build plug-ins using a new programming interface.",
                "Open-source alternatives have been gaining ground in recent years.",
            ),
        ),
        _frame(
            (
                "{tcompany} unveils next-generation game console",
                "New game console promises lifelike graphics",
                "{tcompany} shows new games at industry expo",
            ),
            (
                "{tcompany} showed off its next-generation game console at an industry trade show on {day}, promising sharper graphics, online play and a built-in hard drive.",
            ),
            (
                "The console will be compatible with older games.",
                "Developers demonstrated several titles running on the new hardware.",
                "A release date and price were not announced.",
                "The machine uses a custom processor designed with {tcompany2}.",
                "Online multiplayer features will be free for the first year.",
                "Visitors lined up for hours to try the new controller.",
            ),
        ),
        _frame(
            (
                "High-speed internet use soars",
                "More homes sign up for broadband",
                "Wireless hotspots spread to cafes and airports",
                "Survey finds web use climbing",
            ),
            (
                "The number of households with high-speed internet connections rose {pct} percent last year, according to a survey released on {day}, as providers raised speeds and expanded coverage.",
            ),
            (
                "Wireless networks are also spreading quickly in public places.",
                "The survey found that video and music downloads were the fastest-growing uses.",
                "Rural areas still lag behind cities in access to fast connections.",
                "Researchers expect dial-up connections to all but disappear within {num} years.",
                "Many users now spend more time online than watching television.",
                "Engineers are testing new fiber networks that could be ten times faster.",
            ),
        ),
    ),
}


def _topic_text(rng, label, kind):
    place, place2 = rng.sample(rng.choice(_PLACES), 2)
    preset = {
        "country": place[0], "capital": place[1], "demonym": place[2],
        "country2": place2[0], "capital2": place2[1], "demonym2": place2[2],
    }
    picker = _Picker(rng, _TOPIC_POOLS, sticky=_TOPIC_STICKY, preset=preset)
    frame = rng.choice(_TOPIC_FRAMES[label])
    head = _capitalize(picker.fill(rng.choice(frame["head"])))
    if kind == "short":
        return head
    lead = _capitalize(picker.fill(rng.choice(frame["lead"])))
    if kind == "medium":
        mode = rng.random()
        if mode < 0.2:
            return lead
        if mode < 0.75:
            return f"{head} - {lead}"
        extra = _capitalize(picker.fill(rng.choice(frame["more"])))
        return f"{head} - {lead} {extra}"
    k = rng.randint(2, 5)
    extras = [_capitalize(picker.fill(t)) for t in rng.sample(frame["more"], k)]
    return f"{head} - {lead} " + " ".join(extras)


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------

_TEXT_MAKERS = {"sentiment": _sentiment_text, "topic": _topic_text}
_WORD_RANGES = {"short": SHORT_WORDS, "medium": MEDIUM_WORDS, "long": LONG_WORDS}


def _normalize(text):
    return " ".join(text.lower().split())


def _length_plan(n, rng):
    n_short = round(n * SHORT_SHARE)
    n_long = round(n * LONG_SHARE)
    kinds = ["short"] * n_short + ["long"] * n_long + ["medium"] * (n - n_short - n_long)
    rng.shuffle(kinds)
    return kinds


def _check_args(task, split):
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASKS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)}")


def generate(task: str, split: str, seed: int = DEFAULT_SEED) -> list[tuple[str, str]]:
    """Return the demo rows ``(text, label)`` of ``task`` / ``split``.

    ``train`` has 600 rows and ``dev`` 160, split exactly evenly between the
    labels of ``TASKS[task]``.  The result depends only on the arguments:
    each (task, split, seed) has its own RNG stream, and no text occurs twice
    within a split or in both splits of a task.
    """
    _check_args(task, split)
    labels = TASKS[task]
    size = SPLIT_SIZES[split]
    if size % len(labels):
        raise ValueError(f"{size} rows cannot be balanced over {len(labels)} labels")
    per_class = size // len(labels)

    excluded = set()
    if split == "dev":
        excluded = {_normalize(text) for text, _ in generate(task, "train", seed)}

    rng = random.Random(f"demo-data/{task}/{split}/{seed}")
    make_text = _TEXT_MAKERS[task]
    seen = set()
    rows = []
    for label in labels:
        for kind in _length_plan(per_class, rng):
            low, high = _WORD_RANGES[kind]
            for _ in range(_MAX_ATTEMPTS):
                text = _fix_articles(make_text(rng, label, kind)).strip()
                key = _normalize(text)
                if low <= len(text.split()) <= high and key not in seen and key not in excluded:
                    break
            else:  # pragma: no cover - only reachable if the templates shrink
                raise RuntimeError(f"could not draw a new {kind} {task}/{label} text")
            seen.add(key)
            rows.append((text, label))
    rng.shuffle(rows)

    texts = [text for text, _ in rows]
    assert len(set(texts)) == len(texts), "duplicate texts within a split"
    assert not excluded.intersection(_normalize(t) for t in texts), "train/dev overlap"
    assert all(texts), "empty text"
    return rows


def demo_path(task: str, split: str) -> Path:
    """Path of the committed CSV file of ``task`` / ``split``."""
    return DATA_DIR / f"{task}_{split}.csv"


def write(task: str, split: str, path, seed: int = DEFAULT_SEED) -> Path:
    """Write ``generate(task, split, seed)`` to ``path`` as CSV (``text,label``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows(generate(task, split, seed))
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train.demo_data",
        description=(
            "Regenerate the small synthetic demo datasets used to train the default "
            "models offline: sentiment (movie reviews; labels negative/positive) and "
            "topic (news; labels World/Sports/Business/Sci/Tech), each with a train "
            "split (600 rows) and a dev split (160 rows), balanced per label. "
            "Output is byte-identical for a given seed. Files are named "
            "{task}_{split}.csv and have the header 'text,label'."
        ),
    )
    parser.add_argument(
        "--out-dir", type=Path, default=DATA_DIR,
        help="directory to write the four CSV files into (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED,
        help="base random seed; keep the default to reproduce the committed files "
             "(default: %(default)s)",
    )
    parser.add_argument(
        "--check", action="store_true",
        help="do not write; exit with status 1 if the files in --out-dir differ "
             "from what would be generated",
    )
    args = parser.parse_args(argv)

    stale = []
    for task in TASKS:
        for split in SPLITS:
            target = args.out_dir / f"{task}_{split}.csv"
            if args.check:
                tmp = target.with_name(target.name + ".check.tmp")
                try:
                    write(task, split, tmp, args.seed)
                    same = target.is_file() and target.read_bytes() == tmp.read_bytes()
                finally:
                    if tmp.exists():
                        tmp.unlink()
                print(f"{'ok   ' if same else 'STALE'} {target}")
                if not same:
                    stale.append(target)
            else:
                write(task, split, target, args.seed)
                print(f"wrote {target}")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
