"""Built-in word list and token generator for the synthetic text scenes.

refq's synthetic scenes (docs/spotter.md T6) draw their words from a word list. Scene text
is not only dictionary words, so `sample_token` mixes three sources:

* dictionary words from `VOCABULARY` (~1100 English words and short tokens
  seen on signs, labels and receipts), in lower, Title or UPPER case;
* generated tokens (numbers, prices, dates, times, percentages, product
  codes, phone-like numbers), drawn from the given `rng`;
* dictionary words with one leading or trailing punctuation mark, the case
  the ICDAR 2015 end-to-end rule (docs/spotter.md T7) forgives on the GT side.

All characters are printable ASCII without spaces, so every training font
renders every token and one token is one ICDAR word. No external downloads.

References:
    docs/spotter.md, T6 (data) and T7 (punctuation rule); Karatzas et al., ICDAR 2015.
"""
from __future__ import annotations

import numpy as np

_WORDS = """
a able about above accept access account across act action active actor add address admit adult
advice afraid after again against age agent ago agree ahead aid air airport alarm album alive all
allow almost alone along already also always amount and angle animal answer any apart apple april
area arm army around arrive art article artist ask attack august aunt author autumn avenue avoid
away baby back bad bag bake bakery balance ball band bank bar base basic basket bath battery beach
bean bear beauty because become bed beef beer before begin behind believe bell below belt bench
best better between bicycle big bike bill bird birth bistro bit bitter black blade blanket blind
block blood blue board boat body boil bone book boot border born borrow boss both bottle bottom
bowl box boy brain branch brand brave bread break breakfast brick bridge brief bright bring broad
broken brother brown brush budget build burger burn bus business busy but butter button buy cab
cabin cable cafe cake call calm camera camp can canal candle candy cap capital car card care
careful cargo carpet carry case cash castle cat catch cause ceiling cell center central century
chain chair chalk chance change channel chapter charge cheap check cheese chef cherry chest chicken
chief child chip chocolate choice church cinema circle city civil claim class clean clear clerk
clever client climb clinic clock close closed cloth cloud club coach coast coat code coffee coin
cold collect college colour column come comfort common company compare complete computer concert
contact control cook cookie cool copy corner correct cost cotton couch count country county course
court cousin cover cow crash cream credit crew crisp cross crowd crown cup curve custom customer
cut cycle daily damage dance danger dark data date daughter day dead deal dear debt december
decide deep degree delay deli deliver demand dental depart depot depth desert design desk detail
device diamond diary diet differ dinner direct dirty discount dish display distance district
dock doctor dog dollar domain door double down downtown dozen draft dragon drain drama draw dream
dress drink drive driver drop drug dry duck during dust duty each eagle early earn earth east
easy eat edge egg eight either elbow elder electric elevator eleven else email empty end enemy
energy engine enjoy enough enter entrance entry equal error escape estate euro even evening event
ever every exact exam example except exchange exit expert express extra eye fabric face fact
factory fail fair faith fall false family famous fan far farm fashion fast father fault favour
fear feather february fee feel fence ferry festival fever few field fifteen fifty fight figure
file fill film final find fine finger finish fire firm first fish fit five fix flag flat flight
floor flour flower fly focus fog fold follow food foot force forest forget fork form forty forward
fountain four frame free fresh friday fridge friend from front frost fruit fuel full fun fund
funny furniture future gallery game garage garden gas gate gather general gentle gift girl give
glad glass global glove go goal gold golf good goods govern grace grade grain grand grape grass
great green grey grill grocery ground group grow guard guest guide guitar habit hair half hall
hand handle hang happy harbor hard harvest hat have head health hear heart heat heavy height hello
help her here hero hidden high hill hire history hit hold hole holiday home honey hope horse
hospital host hot hotel hour house how huge human humor hundred hungry hunt hurry ice idea ill
image inch income index indoor info inside iron island item jacket jam january jazz jeans jewel
job join joke journal journey joy judge juice july jump june jungle junior just keep kettle key
kid kind king kiss kitchen knee knife knock know label labor lady lake lamp land lane language
large last late laugh launch law lawn lead leaf learn least leather leave left leg legal lemon
lend length less lesson letter level library license lid life lift light like limit line lion lip
liquid list listen little live lobby local lock lodge logo long look loose lose lot loud love low
luck lunch machine magic mail main major make mall man manager map march margin market marry match
matter maybe meal mean measure meat medal media medical meet melon member memory menu merchant
message metal meter method metro middle midnight mild mile milk mill mind mineral minute mirror
miss mix mobile model modern moment monday money monitor month moon more morning most mother motor
mount mountain mouse mouth move movie much museum music must name narrow nation native nature near
neck need needle nest net never new news next nice night nine noble noise none noon normal north
nose note notice novel november now number nurse oak object ocean october offer office often oil
old olive once one onion only open opera option orange order organic other outdoor outlet oven
over owner oxygen pack package page paint pair palace palm pan panel paper parade parcel pardon
parent park parking part party pass passage past pasta path patient pattern pause pay peace peach
pear pen pencil people pepper perfect period person pet phone photo piano pick picture pie piece
pilot pink pipe pitch pizza place plain plan planet plant plate platform play please plenty pocket
poem point police policy polish pool poor popular port post postal potato pound powder power
practice press pretty price pride prince print prison private prize problem produce product profit
program project promise proof proper public pull pump pupil pure purple push quality quarter queen
question quick quiet quite rabbit race radio rail rain raise range rapid rare rate raw reach read
ready real reason receipt record red refund region relax remote rent repair report rescue reserve
rest result return rice rich ride right ring rise risk river road rock roll roof room root rope
rose rough round route royal rubber rule run rural safe safety sail salad sale salt same sample
sand saturday sauce save say scale scene school science score screen sea season seat second secret
section secure see seed sell send senior sense september serve service set seven shade shadow shake
shape share sharp shelf shell shine ship shirt shoe shop shore short show shower side sign signal
silent silk silver simple since sing single sink sister sit six size skill skin sky sleep slice
slide slow small smart smile smoke snack snow soap soccer social sock soft soil solar sold soldier
solid some son song soon sorry sort sound soup south space spare speak special speed spend spice
spirit sport spot spring square stable staff stage stair stamp stand star start state station stay
steak steam steel step stick still stock stone stop store storm story straight strange street
strong student studio study style subway sugar suit summer sun sunday super supply sure surface
sweet swim switch table tail take talk tall tank tape taste tax taxi tea teach team tear teeth
temple ten tennis tent term test text thank theatre thin thing think third thirty three through
thursday ticket tide tiger time tiny tip tired title toast today toilet token tomato tone tonight
tool tooth top total touch tour tourist towel tower town toy track trade traffic train travel tray
treat tree trend trial trip truck true trust truth try tuesday tunnel turn twelve twenty twin two
type uncle under union unit until upper urban use useful usual valley value van vegetable velvet
venue version very video view village visit voice volume vote wage wait walk wall want warm warn
wash watch water wave way weak wear weather wedding wednesday week weight welcome well west wet
wheel when white whole wide wife wild win wind window wine winter wire wise wish with wood wool
word work world worry write wrong yard year yellow yes yesterday yoga young youth zero zone zoo
about bakery boutique brewery cafeteria campus carwash cashier chemist cottage crossing dairy
deposit diner exhibit florist gym hostel inn kiosk laundry lounge marina motel noodle optician
outlet pharmacy plaza pub quay ramen salon sushi tavern terminal vintage
ok tv atm dvd usb wifi bbq diy vip fm am pm no st rd ave blvd dr mr mrs ms km kg cm mm ml
inc ltd co dept tel fax mon tue wed thu fri sat sun jan feb mar apr jun jul aug sep oct nov dec
"""

VOCABULARY: tuple[str, ...] = tuple(dict.fromkeys(_WORDS.split()))

_ABBREVIATIONS = (
    "e.g.", "i.e.", "etc.", "U.S.", "U.K.", "No.", "St.", "Rd.", "Ave.", "Dr.", "Mr.", "Mrs.",
    "Ltd.", "Inc.", "Co.", "a.m.", "p.m.", "approx.", "vs.", "Jr.", "Tel.", "Apt.", "Dept.",
)
_CODE_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"
_LEADING = "(\"'["
_TRAILING = ".,!?:;\"'"


def _case(word: str, rng: np.random.Generator) -> str:
    """The word in lower (45%), Title (35%) or UPPER (20%) case."""
    u = rng.random()
    if u < 0.45:
        return word.lower()
    if u < 0.80:
        return word[:1].upper() + word[1:].lower()
    return word.upper()


def _number(rng: np.random.Generator) -> str:
    """An integer of 1-5 digits, sometimes with a thousands separator."""
    digits = int(rng.integers(1, 6))
    value = int(rng.integers(10 ** (digits - 1) if digits > 1 else 0, 10 ** digits))
    return f"{value:,}" if value >= 1000 and rng.random() < 0.5 else str(value)


def _price(rng: np.random.Generator) -> str:
    """A price such as $12.50, 3.99 or $1,250."""
    if rng.random() < 0.2:
        body = f"{int(rng.integers(1000, 20000)):,}"
    else:
        body = f"{int(rng.integers(0, 200))}.{int(rng.integers(0, 100)):02d}"
    return "$" + body if rng.random() < 0.7 else body


def _date(rng: np.random.Generator) -> str:
    """A date in one of the usual numeric formats (12/03/2021, 2021-03-12, 12.03.21)."""
    year = int(rng.integers(1990, 2031))
    month = int(rng.integers(1, 13))
    day = int(rng.integers(1, 29))
    style = int(rng.integers(0, 4))
    if style == 0:
        return f"{day:02d}/{month:02d}/{year}"
    if style == 1:
        return f"{year}-{month:02d}-{day:02d}"
    if style == 2:
        return f"{day:02d}.{month:02d}.{year % 100:02d}"
    return f"{month}/{day}"


def _time(rng: np.random.Generator) -> str:
    """A clock time such as 09:30 or 7:45pm."""
    if rng.random() < 0.5:
        return f"{int(rng.integers(0, 24)):02d}:{int(rng.integers(0, 12)) * 5:02d}"
    suffix = "am" if rng.random() < 0.5 else "pm"
    return f"{int(rng.integers(1, 13))}:{int(rng.integers(0, 12)) * 5:02d}{suffix}"


def _code(rng: np.random.Generator) -> str:
    """A product/room/route code such as A7-42, B12, XK-301 or 4F."""
    style = int(rng.integers(0, 4))
    letters = "".join(_CODE_LETTERS[int(i)] for i in rng.integers(0, len(_CODE_LETTERS), size=2))
    if style == 0:
        return f"{letters[0]}{int(rng.integers(0, 10))}-{int(rng.integers(10, 100))}"
    if style == 1:
        return f"{letters[0]}{int(rng.integers(1, 100))}"
    if style == 2:
        return f"{letters}-{int(rng.integers(100, 1000))}"
    return f"{int(rng.integers(1, 10))}{letters[0]}"


def _percent(rng: np.random.Generator) -> str:
    """A percentage such as 25% or -30%."""
    value = int(rng.integers(1, 20)) * 5
    return f"-{value}%" if rng.random() < 0.4 else f"{value}%"


def _phone(rng: np.random.Generator) -> str:
    """A phone-like number such as 555-0142."""
    return f"{int(rng.integers(200, 1000))}-{int(rng.integers(0, 10000)):04d}"


def _punctuated(rng: np.random.Generator) -> str:
    """A dictionary word with one leading and/or one trailing punctuation mark."""
    word = _case(VOCABULARY[int(rng.integers(0, len(VOCABULARY)))], rng)
    u = rng.random()
    if u < 0.6:
        return word + _TRAILING[int(rng.integers(0, len(_TRAILING)))]
    if u < 0.8:
        return _LEADING[int(rng.integers(0, len(_LEADING)))] + word
    return "(" + word + ")" if rng.random() < 0.7 else "[" + word + "]"


_GENERATORS = (_number, _price, _date, _time, _code, _percent, _phone, _punctuated)
_GENERATOR_WEIGHTS = np.array([0.22, 0.16, 0.10, 0.08, 0.14, 0.06, 0.04, 0.20])


def sample_token(rng: np.random.Generator, p_dictionary: float = 0.75) -> str:
    """One scene-text token: a cased dictionary word with probability p_dictionary, else generated."""
    if not 0.0 <= p_dictionary <= 1.0:
        raise ValueError(f"sample_token: p_dictionary={p_dictionary} is not in [0, 1]")
    u = rng.random()
    if u < p_dictionary:
        return _case(VOCABULARY[int(rng.integers(0, len(VOCABULARY)))], rng)
    if rng.random() < 0.08:
        return _ABBREVIATIONS[int(rng.integers(0, len(_ABBREVIATIONS)))]
    k = int(rng.choice(len(_GENERATORS), p=_GENERATOR_WEIGHTS / _GENERATOR_WEIGHTS.sum()))
    return _GENERATORS[k](rng)
