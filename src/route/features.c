/* features: see features.h. The scanner is the hot path of every routed
 * request: one branch per byte, one hash-table probe per word. */
#include "route/features.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/xalloc.h"

#define FNV_OFFSET 1469598103934665603ull
#define FNV_PRIME 1099511628211ull

const char *const feat_hand_names[FEAT_HAND_N] = {
    "length",          "words",           "digits",          "operators",
    "brackets",        "latex",           "code-punctuation", "indented-lines",
    "lines",           "question-mark",   "code-words",      "math-words",
    "role-play-words", "numbers",         "identifiers",     "upper-case",
    "word-length",     "number-count",    "request",         "harmful-words",
    "harmful-request", "harmful-acts",    "options",         "judging",
    "harm-density",    "harm-aimed",      "self-talk",
};

const char *const feat_hand_sign[FEAT_HAND_N] = {
    NULL,   "math",   "math",   "math",
    NULL,   "math",   "code",   "code",
    NULL,   NULL,     "code",   "math",
    "unsafe", "math", "code",   NULL,
    NULL,   "math",   "unsafe", "unsafe",
    "unsafe", "unsafe", "safe",   "safe",
    "unsafe",   "unsafe",   "unsafe",
};

uint64_t feat_hash_word(const char *w, size_t len) {
    uint64_t h = FNV_OFFSET;
    for (size_t i = 0; i < len; i++) {
        unsigned c = (unsigned char)w[i];
        if (c >= 'A' && c <= 'Z') c += 32;
        h = (h ^ c) * FNV_PRIME;
    }
    return h ? h : 1;
}

/* FNV's low bits are weak for power-of-two tables: mix before masking. */
static inline uint32_t slot_of(uint64_t key, uint32_t mask) {
    key ^= key >> 31;
    key *= 0x9e3779b97f4a7c15ull;
    return (uint32_t)(key >> 32) & mask;
}

void vocab_init(route_vocab *v, uint32_t capacity_hint) {
    uint32_t cap = 1024;
    while (cap < capacity_hint * 2) cap *= 2;
    memset(v, 0, sizeof *v);
    v->slots = xcalloc(cap, sizeof *v->slots);
    v->mask = cap - 1;
}

void vocab_free(route_vocab *v) {
    free(v->slots);
    free(v->row_weight);
    memset(v, 0, sizeof *v);
}

static void vocab_grow(route_vocab *v) {
    route_vocab bigger;
    vocab_init(&bigger, (v->mask + 1));
    for (uint32_t i = 0; i <= v->mask; i++)
        if (v->slots[i].key) vocab_put(&bigger, v->slots[i].key, v->slots[i].row, v->slots[i].flags);
    free(v->slots);
    v->slots = bigger.slots;
    v->mask = bigger.mask;
}

vocab_entry *vocab_put(route_vocab *v, uint64_t key, int32_t row, uint32_t flags) {
    if (2 * (v->n + 1) > v->mask + 1) vocab_grow(v);
    uint32_t i = slot_of(key, v->mask);
    while (v->slots[i].key && v->slots[i].key != key) i = (i + 1) & v->mask;
    vocab_entry *e = &v->slots[i];
    if (!e->key) {
        v->n++;
        *e = (vocab_entry){key, row, flags};
    } else {
        if (row >= 0) e->row = row;
        e->flags |= flags;
    }
    return e;
}

const vocab_entry *vocab_get(const route_vocab *v, uint64_t key) {
    uint32_t i = slot_of(key, v->mask);
    for (;;) {
        const vocab_entry *e = &v->slots[i];
        if (e->key == key) return e;
        if (!e->key) return NULL;
        i = (i + 1) & v->mask;
    }
}

/* Small lexicons: signs of code, of mathematics, and of the role-play and
 * instruction-override talk of jailbreak prompts. They generalise across
 * sources because they name the subject, not a data set's template. */
static const char *const lex_code[] = {
    "def", "return", "import", "class", "lambda", "elif", "print", "void", "int", "const",
    "var", "let", "function", "func", "self", "none", "null", "true", "false", "struct",
    "public", "private", "static", "include", "printf", "println", "len", "range", "str",
    "dict", "list", "array", "arrays", "string", "strings", "python", "java", "javascript",
    "code", "program", "algorithm", "implement", "compile", "compiler", "recursion",
    "recursive", "loop", "variable", "boolean", "regex", "sql", "query", "html", "api",
    "json", "bug", "debug", "tuple", "tuples", "integer", "float", "char", "bool", "typing",
    "script", "sort", "sorted", "index", "element", "elements", "substring", "regular",
    "binary", "bits", "bit", "pointer", "stack", "queue", "hash", "node", "tree", "graph",
    "runtime", "complexity", "software", "memory", "cpu", "compute",
};
static const char *const lex_math[] = {
    "solve", "calculate", "compute", "equation", "equations", "integer", "integers",
    "prime", "sum", "product", "probability", "fraction", "percent", "percentage",
    "ratio", "remainder", "divisible", "digits", "digit", "polynomial", "triangle",
    "angle", "area", "perimeter", "radius", "circle", "square", "sqrt", "frac", "cdot",
    "times", "plus", "minus", "divided", "derivative", "integral", "matrix", "vector",
    "real", "evaluate", "simplify", "expression", "total", "many", "much", "average",
    "mean", "median", "dollars", "cost", "costs", "price", "number", "numbers", "value",
    "x", "y", "n", "pi", "theta", "log", "degrees", "units", "rectangle", "coordinates",
    "greatest", "least", "positive", "negative", "distinct", "function",
};
static const char *const lex_role[] = {
    "ignore", "pretend", "roleplay", "persona", "jailbreak", "jailbroken", "unfiltered",
    "uncensored", "unrestricted", "restrictions", "dan", "chatgpt", "openai", "filter",
    "filters", "guidelines", "amoral", "immoral", "simulate", "hypothetical", "fictional",
    "forget", "override", "bypass", "censorship", "censored", "obey", "comply", "limitations",
    "disregard", "disobey", "unethical", "unlimited", "unchained", "refuse", "refusal", "rules",
};

/* Harms by topic, written from general knowledge of what a gateway must
 * refuse (the hazard classes of public content policies), not from the
 * data sets: violence, weapons and agents of mass harm, drugs, attacks on
 * computers, crime for gain, hate and harassment and their words, self-
 * harm, sexual abuse, deception, spying, extremism, copying others' works.
 * Words of news or medicine ("attack", "virus", "disease", "shot") are
 * left out: texts about the world are full of them. */
static const char *const lex_harm[] = {
    /* violence */
    "murder", "murders", "murdering", "murderer", "assassinate", "assassination", "slaughter",
    "massacre", "behead", "decapitate", "strangle", "suffocate", "stab", "stabbing", "maim",
    "torture", "torturing", "kidnap", "kidnapping", "abduct", "abduction", "hostage", "hostages",
    "lynch", "lynching", "genocide", "arson", "terrorism", "terrorist", "terrorists", "gunman",
    "bloodshed", "mutilate", "dismember", "assault", "assaulting", "homicide", "manslaughter",
    "assassin", "hitman", "hitmen", "gunmen", "arsonist", "terrorize", "genocidal", "pogrom",
    /* weapons and agents of mass harm */
    "bomb", "bombs", "bombing", "explosive", "explosives", "detonate", "detonator", "grenade",
    "grenades", "ied", "molotov", "tnt", "firearm", "firearms", "handgun", "rifle", "ammunition",
    "silencer", "gunpowder", "shrapnel", "landmine", "bioweapon", "bioweapons", "uranium",
    "weaponize", "weaponized", "bioterrorism", "bioterror", "agroterrorism", "radiological",
    /* drugs */
    "mdma", "ecstasy", "lsd", "ghb", "opium", "narcotic", "narcotics", "overdose", "crystal",
    /* attacks on computers */
    "malware", "ransomware", "spyware", "keylogger", "keyloggers", "botnet", "rootkit", "trojan",
    "backdoor", "phishing", "ddos", "cyberattack", "cyberattacks", "hacking", "hack", "hacker",
    "hackers", "hijack", "hijacking", "bruteforce", "skimmer", "skimming", "carding", "doxx",
    "doxxing", "dox", "stalkerware", "spoofing", "exploit", "exploits", "payload", "cybercrime",
    "cybercriminal", "cyberterrorism", "cyberstalk", "cyberstalking", "hacktivist", "adware",
    "scareware", "infostealer", "smishing", "vishing", "keygen", "warez",
    /* crime for gain */
    "fraud", "fraudulent", "scam", "scams", "scammer", "scammers", "embezzle", "embezzlement",
    "launder", "laundering", "counterfeit", "counterfeiting", "forge", "forgery", "forged", "bribe",
    "bribery", "extort", "extortion", "blackmail", "ponzi", "shoplift", "shoplifting", "burglary",
    "burglar", "robbery", "rob", "steal", "stealing", "theft", "smuggle", "smuggling", "trafficking",
    "trafficker", "pickpocket", "looting", "ransom", "hotwire", "piracy", "pirated", "plagiarize",
    "illegal", "illegally", "unlawfully", "contraband", "thief", "thieves", "carjack", "carjacking",
    "mugging", "lockpicking", "racketeering", "perjury", "fraudster", "counterfeiter", "cartel",
    "trespassing", "swindle",
    /* hate and harassment, and their words */
    "racist", "racism", "slur", "slurs", "bigot", "bigotry", "supremacist", "supremacy",
    "antisemitic", "antisemitism", "homophobic", "transphobic", "xenophobic",
    "misogynistic", "sexist", "dehumanize", "dehumanizing", "harass", "harassment", "harassing",
    "bully", "bullying", "cyberbully", "cyberbullying", "stalk", "stalking", "threaten",
    "threatening", "intimidate", "humiliate", "vermin", "subhuman", "idiot", "moron", "stupid",
    "loser", "pathetic", "worthless", "scum", "bitch", "bastard", "whore", "slut", "fuck",
    "fucking", "shit", "cunt", "asshole", "retard", "retarded", "faggot", "islamophobia",
    "islamophobic", "homophobia", "transphobia", "xenophobia", "misogyny", "misogynist",
    "antisemite", "bigoted", "intimidation", "stalker", "harasser", "coerce", "coercion",
    /* self-harm */
    "suicide", "suicidal", "selfharm", "anorexia", "anorexic", "bulimia", "bulimic", "purging",
    "wrists", "thinspiration", "thinspo",
    /* sexual abuse */
    "porn", "porno", "pornography", "pornographic", "nudes", "sexting", "pedophile", "pedophilia",
    "paedophile", "molest", "molestation", "rape", "raping", "rapist", "incest", "prostitution",
    "paedophilia", "molester", "sextortion", "csam", "bestiality", "zoophilia", "necrophilia",
    "voyeurism", "upskirt", "nonconsensual", "prostitute", "pimping", "grope",
    /* deception */
    "misinformation", "disinformation", "propaganda", "hoax", "conspiracy", "fabricate",
    "fabricated", "falsify", "falsified", "defame", "defamatory", "defamation", "slander", "libel",
    "smear", "impersonate", "deceive", "deceptive", "manipulate", "gaslight", "brainwash", "rumor",
    "rumors", "rumours", "mislead", "misleading", "fake", "deepfake", "impersonation",
    "astroturfing", "sockpuppet", "falsehood", "falsehoods",
    /* spying, extremism, getting away with it */
    "spy", "spying", "eavesdrop", "eavesdropping", "wiretap", "radicalize", "radicalization",
    "extremist", "extremism", "militia", "jihad", "jihadist", "martyrdom", "undetected",
    "untraceable", "anonymously", "covertly", "unnoticed", "alibi",
    /* harm named in general: what makes a request about one of the above */
    "harm", "harmful", "hurt", "dangerous", "malicious", "criminal", "crime", "crimes", "violent",
    "violence", "abuse", "abusive", "victim", "victims", "spam", "infiltrate", "sabotage",
    "inferior", "oppression", "reckless", "unsolicited", "weapon", "weapons", "drugs",
    "exploitation", "addiction", "disrupt", "chaos", "vulnerable",
    "destroy", "deadly", "lethal", "illicit", "hateful", "inflammatory",
};

/* Hostility, more than lex_harm's insults: written from general
 * knowledge of the classes a toxicity filter names (insult, contempt,
 * dehumanisation, identity attack, profanity), not from the data sets:
 * what a text says to or about someone to wound them. Counted as harmful
 * words. Words with an everyday sense ("pig", "rat", "dirty", "animals",
 * "plague", "die") are left out; not in the past tense ("despised" tells
 * a story). */
static const char *const lex_hostile[] = {
    /* insults */
    "dumb", "dumbass", "imbecile", "cretin", "halfwit", "dimwit", "nitwit", "idiotic", "moronic",
    "brainless", "useless", "disgusting", "disgrace", "despicable", "repulsive", "revolting", "vile",
    "contemptible", "hideous", "ugly", "freak", "creep", "weirdo", "jerk", "jackass", "douche",
    "douchebag", "prick", "twat", "wanker", "scumbag", "lowlife", "skank", "psycho", "lunatic",
    "trash", "garbage", "filth", "filthy",
    /* contempt and dehumanisation */
    "despise", "loathe", "detest", "parasite", "leech", "cockroach", "savage", "barbaric",
    "degenerate", "inbred", "mongrel", "thug", "infest", "infestation", "exterminate",
    "extermination", "undesirable", "unworthy",
    /* slurs (identity attacks), and profanity */
    "nigger", "nigga", "kike", "spic", "chink", "gook", "wetback", "beaner", "raghead", "towelhead",
    "coon", "paki", "tranny", "dyke", "fag", "fucker", "motherfucker", "bullshit", "goddamn", "piss",
    "crap",
};

/* Agents of mass harm, drugs of abuse and attacks on computers by name,
 * from general knowledge of the hazard classes (chemical, biological,
 * radiological and explosive agents and their precursors; named exploits
 * and attack tools): a request for one names the thing, not a harm.
 * Counted as harmful words, and as names (LEX_NAMED): written with a
 * capital inside a sentence ("how to make Sarin") they are still the
 * agent, which no everyday name or title shares ("opium" and "ecstasy",
 * with their Opium Wars and titles, stay in lex_harm). Medicines and
 * everyday chemicals ("chlorine", "bleach") are left out. */
static const char *const lex_agent[] = {
    "sarin", "ricin", "anthrax", "botulinum", "cyanide", "arsenic", "strychnine", "phosgene",
    "napalm", "thermite", "cocaine", "heroin", "methamphetamine", "meth", "fentanyl", "ketamine",
    "rohypnol",
    "tabun", "soman", "cyclosarin", "vx", "novichok", "lewisite", "chloropicrin", "abrin",
    "saxitoxin", "tetrodotoxin", "aflatoxin", "dimethylmercury", "polonium", "plutonium", "tatp",
    "hmtd", "petn", "rdx", "hmx", "semtex", "nitroglycerin", "picric", "smallpox", "variola",
    "ebola", "tularemia", "carfentanil", "nitazene", "precursor", "pathogen", "toxin",
    "shellcode", "metasploit", "mimikatz", "xss", "csrf", "log4shell", "eternalblue", "heartbleed",
    "cryptojacking", "credential",
};
/* Extremist groups by name, from general knowledge of the groups that
 * lists of terrorist and hate organisations name: names, counted however
 * capitalised, like the agents. */
static const char *const lex_group[] = {
    "nazi", "nazis", "neonazi", "neonazis", "kkk", "klan", "klansman", "isis", "isil", "daesh",
    "qaeda", "taliban", "shabaab", "hezbollah", "atomwaffen",
};
static const char *const pair_agent[] = {
    "ammonium nitrate", "privilege escalation", "reverse shell", "buffer overflow",
    "code execution", "site scripting", "credential stuffing", "password cracking",
    "enriched uranium", "dirty cow",
};

/* Commands that destroy a system's data, as a shell or a database takes
 * them ("rm -rf /", "mkfs", "format c:", "del /f /s /q", "dd if=/dev/zero
 * of=/dev/sda", "DROP TABLE"): harm in a command, which no word names.
 * The scanner reads "rm -rf" as the words "rm" "rf". Counted as harmful
 * words. */
static const char *const lex_wipe[] = {
    "mkfs", "wipefs", "diskpart", "system32",
};
static const char *const pair_wipe[] = {
    "rm rf", "rm fr", "sudo rm", "preserve root", "format c", "del f", "del s", "del q", "rd s",
    "dd if", "dev sda", "dev sdb", "dev nvme0n1", "drop table", "drop database", "fork bomb",
};

/* Signs that a text asks for something to be done or explained: alone
 * they are no sign of harm (most benign prompts are requests too), but a
 * request about a harmful topic is what the guard must catch, while a
 * question that only mentions one (an exam question on malware) is not. */
static const char *const lex_ask[] = {
    "write", "create", "develop", "give", "provide", "explain", "describe", "generate", "teach",
    "outline", "design", "produce", "make", "show", "tell", "list", "suggest", "build", "help",
    "instruct", "publish", "post", "draft", "compose", "offer", "demonstrate", "detail", "share",
    "plan", "devise", "craft", "prepare", "convince", "persuade", "encourage", "promote", "find",
    "ways", "tips", "steps", "guide", "instructions", "methods",
};
static const char *const lex_guide[] = {
    "instructions", "tutorial", "guide", "step", "steps", "detailed", "ways", "tips", "methods",
    "recipe", "manual", "blueprint", "strategy", "plan", "script",
};
/* Harmful acts as a request names them: verbs ("how to steal", "write a
 * script that hacks") and the words of getting away with it. A question
 * about a harmful topic uses nouns instead ("theft", "attack"), which are
 * in the harmful lexicon, not here. No word with an everyday sense
 * ("false", "lie", "crash", "caught"): puzzles and stories are full of
 * them, and the guard then learnt to ignore the whole list. */
static const char *const lex_act[] = {
    "kill", "kills", "killing", "murder", "assassinate", "poison", "poisoning", "stab", "shoot",
    "torture", "kidnap", "abduct", "bomb", "bombs", "detonate", "steal", "steals", "stealing",
    "rob", "shoplift", "hack", "hacks", "hacking", "crack", "phish", "phishing", "infect",
    "launder", "laundering", "smuggle", "smuggling", "counterfeit", "forge", "bribe",
    "blackmail", "extort", "defraud", "scam", "cheat", "cheating", "evade", "evading",
    "manipulate", "manipulating", "exploit", "exploits", "exploiting", "harass", "harassing",
    "bully", "bullying", "cyberbully", "stalk", "stalking", "threaten", "threatening",
    "intimidate", "sabotage", "vandalize", "incite", "inciting", "radicalize", "recruit",
    "dox", "impersonate", "spoof", "pirate", "exfiltrate", "tamper", "overdose", "enslave", "deface",
    "undetected", "untraceable", "illegally", "unauthorized", "unsuspecting",
};

/* Two-word phrases, looked up as the bigram they make: harms that one
 * word does not name ("insider trading", "dark web"), the cover of an act
 * ("getting caught", "their consent") and the talk of jailbreaks ("from
 * now on", "developer mode", "no restrictions"). */
static const char *const pair_harm[] = {
    "insider trading", "identity theft", "tax evasion", "hate speech", "fake news", "dark web",
    "sql injection", "mustard gas", "nerve agent", "nerve gas", "pipe bomb", "date rape",
    "child pornography", "child abuse", "self harm", "kill yourself", "hang yourself", "cut yourself",
    "kill myself", "hurt myself", "cut myself", "hang myself", "starve myself", "hurt yourself",
    "starve yourself", "pro ana",
    "ponzi scheme", "pyramid scheme", "social engineering", "false information", "conspiracy theory",
    "conspiracy theories", "chemical weapon", "chemical weapons", "biological weapon",
    "biological weapons", "mass shooting", "school shooting", "human trafficking", "sex trafficking",
    "revenge porn", "stolen credit", "stolen goods", "fake reviews", "fake identity", "counterfeit money",
    "break into", "breaking into", "breaks into", "broke into", "broken into", "credit card fraud",
    "brute force", "zero day", "ethnic cleansing", "white supremacy", "drunk driving", "voter fraud",
    "election fraud", "voter suppression", "beat up", "beats up", "beating up", "beaten up",
    "chlorine gas", "dirty bomb", "ghost gun", "drug dealer", "sell drugs", "sells drugs",
    "selling drugs", "sold drugs", "racial slur", "master race",
    "white power", "white nationalism", "white nationalist", "great replacement", "non consensual",
    "hidden camera", "hidden cameras", "spy camera", "money mule", "black market", "loan shark",
    "con artist", "nerve agents", "chemical agent", "biological agent", "poison gas", "printed gun",
    "command injection", "code injection", "spear phishing", "holocaust denial", "social security",
    /* the everyday nouns of harm ("threat", "worm", "attack") are news
     * words alone, but not in these phrases */
    "death threat", "death threats", "computer worm", "computer worms", "computer virus",
    "computer viruses", "cyber attack", "cyber attacks", "service attack", "service attacks",
    "dos attack", "dos attacks", "syn flood", "udp flood", "ping flood", "http flood",
    /* copying others' works: reproducing lyrics or a book */
    "lyrics of", "passage from", "chapter from", "excerpt from",
};
static const char *const pair_cover[] = {
    "getting caught", "being caught", "get caught", "being detected", "getting detected",
    "avoid detection", "evade detection", "evading detection", "without detection", "their consent",
    "their knowledge", "their permission", "without consent", "without permission",
    "without authorization", "away with", "leaving evidence", "leaving traces", "any evidence",
    "destroy evidence", "the police", "law enforcement",
};
static const char *const pair_role[] = {
    "now on", "act as", "pretend to", "in character", "developer mode", "no restrictions",
    "no rules", "no limits", "no limitations", "no filters", "no morals", "no ethics", "no boundaries",
    "not bound", "anything now", "without restrictions", "without censorship", "without limits",
    "content policy", "ethical guidelines", "moral guidelines", "previous instructions",
    "prior instructions", "your programming", "never refuse", "always answer", "two responses",
    "stay in", "break character", "any restrictions", "your guidelines", "ethical boundaries",
    "moral boundaries", "ethical constraints", "moral constraints",
};

/* A task about a given text: to classify, detect or rate it. Such a task
 * quotes the harm it asks about ("Is this tweet offensive?") without
 * asking for it. */
static const char *const lex_judge[] = {
    "classify", "classification", "categorize", "detect", "identify", "determine", "whether",
    "sentiment", "label", "decide", "assess", "evaluate", "rate", "rating",
};

/* Whom a harm is aimed at, and its spreading: "violence against a group",
 * "spy on people", "promotes self-harm". Counted only beside a harm: on
 * their own they are the words of every other text. */
static const char *const lex_aim[] = {
    "someone", "somebody", "people", "person", "others", "individual", "individuals", "group",
    "groups", "community", "minority", "minorities", "users", "child", "children", "kids", "minors",
    "teenagers", "elderly", "women", "immigrants", "neighbor", "neighbour", "coworker", "employees",
    "citizens", "public", "customers", "consumers", "strangers", "victim", "victims", "target",
    "promote", "promotes", "promoting", "encourage", "encourages", "encouraging", "glorify",
    "glorifies", "glorifying", "spread", "spreads", "spreading", "incite", "incites", "advocate",
    "advocates", "justify", "justifies",
};

/* Words about the assistant and how it must answer: a jailbreak is a
 * long set of rules for the model's replies, so they fill it, while a
 * task mentions them once ("write a response"). Counted as a density. */
static const char *const lex_meta[] = {
    "ai", "assistant", "chatbot", "model", "gpt", "chatgpt", "llm", "bot", "prompt", "prompts",
    "respond", "responds", "response", "responses", "reply", "replies", "answer", "answers",
    "output", "mode", "character", "persona", "role", "roleplay", "simulate", "simulation",
    "policy", "policies", "guidelines", "rules", "restrictions", "filter", "filters", "censor",
    "censored", "ethics", "ethical", "moral", "morals", "morality", "programming", "instructions",
    "pretend", "act", "acting", "never", "always", "must", "anything", "everything", "user",
};

static const char *const lex_aux[] = {
    "to", "can", "do", "should", "could",
};

static void add_lexicon(route_vocab *v, const char *const *words, size_t n, uint32_t flag) {
    for (size_t i = 0; i < n; i++) vocab_put(v, feat_hash_word(words[i], strlen(words[i])), -1, flag);
}

/* The irregular past and participle of the lexicons' verbs, which the
 * endings of add_inflected cannot make, checked verb by verb against
 * lex_act, lex_harm and lex_hostile ("hurt" is its own past; "shot" is
 * left out with the news words, and "shoot" is only an act). Not "stole":
 * the simple past of word problems and stories ("a seagull stole the
 * fries"), where the participle names stolen goods. */
static const char *const irregular[][2] = {
    {"steal", "stolen"}, {"mislead", "misled"}, {"gaslight", "gaslit"},
};

/* One lemma and its inflections ("spy": spies, spying): a request names
 * the act in whatever form the sentence needs ("a program that spies
 * on", "sabotaging"). The past tense (past != 0) only for the harm
 * lexicon ("raped", "poisoned": a harm whatever the tense); an act verb
 * in the past tells what happened ("killed the powerplay"), which is a
 * story, not a request. Nor the doer ("killer whale"). Forms that are no
 * English word cost a table slot and never match. */
static void add_forms(route_vocab *v, const char *word, uint32_t flag, int past) {
    static const char *const ends[] = {"s", "es", "ing", "ed"};
    char form[64];
    size_t len = strlen(word);
    vocab_put(v, feat_hash_word(word, len), -1, flag);
    if (len < 3 || len + 4 >= sizeof form || strchr(word, ' ')) return;
    char last = word[len - 1], prev = word[len - 2];
    int vowel_y = strchr("aeiou", prev) != NULL;
    for (size_t k = 0; k < sizeof ends / sizeof *ends - !past; k++) {
        size_t stem = len;
        int ends_es = 0;
        memcpy(form, word, len);
        if (last == 'e' && ends[k][0] == 'e') stem--;            /* forge: forges, forged */
        else if (last == 'e' && ends[k][0] == 'i') stem--;       /* sabotage: sabotaging */
        else if (last == 'y' && !vowel_y && ends[k][0] != 'i') { /* spy: spies, spied */
            form[len - 1] = 'i';
            if (ends[k][0] == 's') stem = len, ends_es = 1;
        }
        snprintf(form + stem, sizeof form - stem, "%s", ends_es ? "es" : ends[k]);
        vocab_put(v, feat_hash_word(form, strlen(form)), -1, flag);
        /* rob: robbed, robbing; stab: stabbed */
        if (ends[k][0] != 's' && !strchr("aeiouywx", last) && strchr("aeiou", prev) &&
            !strchr("aeiou", word[len - 3])) {
            form[len] = last;
            snprintf(form + len + 1, sizeof form - len - 1, "%s", ends[k]);
            vocab_put(v, feat_hash_word(form, strlen(form)), -1, flag);
        }
    }
    for (size_t r = 0; past && r < sizeof irregular / sizeof *irregular; r++)
        if (strcmp(word, irregular[r][0]) == 0)
            vocab_put(v, feat_hash_word(irregular[r][1], strlen(irregular[r][1])), -1, flag);
}

/* A lexicon of lemmas with their inflections, in both spellings of
 * "-ize" ("radicalise", "radicalisation": a request is written in British
 * English as often). */
static void add_inflected(route_vocab *v, const char *const *words, size_t n, uint32_t flag, int past) {
    char british[64];
    for (size_t i = 0; i < n; i++) {
        add_forms(v, words[i], flag, past);
        const char *iz = strstr(words[i], "iz");
        size_t len = strlen(words[i]);
        if (!iz || len >= sizeof british || (strcmp(iz, "ize") && strcmp(iz, "ization"))) continue;
        memcpy(british, words[i], len + 1);
        british[iz - words[i] + 1] = 's';
        add_forms(v, british, flag, past);
    }
}

/* Phrases of two words as the scanner hashes them: the bigram key gets
 * flag, the first word LEX_PAIR_START and the second LEX_PAIR (only such
 * a sequence is looked up: "to", "on", "as" end phrases and are
 * everywhere). A phrase of three words ("credit card fraud") is kept as
 * its last two, so those must name the harm alone ("hit and run" would
 * be "and run", "denial of service" "terms of service"). The lexicons
 * give a phrase's inflections themselves ("broke into"). */
static void add_pairs(route_vocab *v, const char *const *phrases, size_t n, uint32_t flag) {
    for (size_t i = 0; i < n; i++) {
        const char *b = strrchr(phrases[i], ' '), *a = b - 1;
        while (a > phrases[i] && a[-1] != ' ') a--;
        uint64_t ha = feat_hash_word(a, (size_t)(b - a)), hb = feat_hash_word(b + 1, strlen(b + 1));
        vocab_put(v, (ha * 0x9e3779b97f4a7c15ull) ^ hb, -1, flag);
        vocab_put(v, ha, -1, LEX_PAIR_START);
        vocab_put(v, hb, -1, LEX_PAIR);
    }
}

void vocab_add_lexicons(route_vocab *v) {
    add_lexicon(v, lex_code, sizeof lex_code / sizeof *lex_code, LEX_CODE);
    add_lexicon(v, lex_math, sizeof lex_math / sizeof *lex_math, LEX_MATH);
    add_lexicon(v, lex_role, sizeof lex_role / sizeof *lex_role, LEX_ROLE);
    add_lexicon(v, lex_ask, sizeof lex_ask / sizeof *lex_ask, LEX_ASK);
    add_lexicon(v, lex_guide, sizeof lex_guide / sizeof *lex_guide, LEX_GUIDE);
    add_lexicon(v, lex_aux, sizeof lex_aux / sizeof *lex_aux, LEX_AUX);
    add_lexicon(v, lex_judge, sizeof lex_judge / sizeof *lex_judge, LEX_JUDGE);
    add_lexicon(v, lex_aim, sizeof lex_aim / sizeof *lex_aim, LEX_AIM);
    add_lexicon(v, lex_meta, sizeof lex_meta / sizeof *lex_meta, LEX_META);
    add_inflected(v, lex_act, sizeof lex_act / sizeof *lex_act, LEX_ACT, 0);
    add_inflected(v, lex_harm, sizeof lex_harm / sizeof *lex_harm, LEX_HARM, 1);
    add_pairs(v, pair_harm, sizeof pair_harm / sizeof *pair_harm, LEX_HARM);
    add_inflected(v, lex_hostile, sizeof lex_hostile / sizeof *lex_hostile, LEX_HARM, 0);
    add_inflected(v, lex_agent, sizeof lex_agent / sizeof *lex_agent, LEX_HARM | LEX_NAMED, 1);
    add_pairs(v, pair_agent, sizeof pair_agent / sizeof *pair_agent, LEX_HARM);
    add_lexicon(v, lex_group, sizeof lex_group / sizeof *lex_group, LEX_HARM | LEX_NAMED);
    add_lexicon(v, lex_wipe, sizeof lex_wipe / sizeof *lex_wipe, LEX_HARM);
    add_pairs(v, pair_wipe, sizeof pair_wipe / sizeof *pair_wipe, LEX_HARM);
    add_pairs(v, pair_cover, sizeof pair_cover / sizeof *pair_cover, LEX_ACT);
    add_pairs(v, pair_role, sizeof pair_role / sizeof *pair_role, LEX_ROLE);
    vocab_put(v, feat_hash_word("how", 3), -1, LEX_HOW);
}

/* ---- the scanner ---- */

void feat_begin(feat_state *s, const route_vocab *v, feat_word_fn fn, void *ctx) {
    memset(s, 0, sizeof *s);
    s->vocab = v;
    s->on_word = fn;
    s->ctx = ctx;
    s->sentence = 1;
}

/* What each byte is to the scanner: not in a word (0), or a word byte:
 * an ASCII letter, digit or '_', or any byte of a multi-byte UTF-8
 * sequence (so non-English words stay whole). BYTE_PLAIN (lower-case
 * letters, UTF-8) is the common case, which costs one compare. */
enum { BYTE_PLAIN = 1, BYTE_UPPER, BYTE_DIGIT, BYTE_UNDER };
#define BYTES_PLAIN8 BYTE_PLAIN, BYTE_PLAIN, BYTE_PLAIN, BYTE_PLAIN, BYTE_PLAIN, BYTE_PLAIN, BYTE_PLAIN, BYTE_PLAIN
#define BYTES_PLAIN64 BYTES_PLAIN8, BYTES_PLAIN8, BYTES_PLAIN8, BYTES_PLAIN8, BYTES_PLAIN8, BYTES_PLAIN8, \
    BYTES_PLAIN8, BYTES_PLAIN8
static const unsigned char byte_kind[256] = {
    ['0'] = BYTE_DIGIT, ['1'] = BYTE_DIGIT, ['2'] = BYTE_DIGIT, ['3'] = BYTE_DIGIT, ['4'] = BYTE_DIGIT,
    ['5'] = BYTE_DIGIT, ['6'] = BYTE_DIGIT, ['7'] = BYTE_DIGIT, ['8'] = BYTE_DIGIT, ['9'] = BYTE_DIGIT,
    ['_'] = BYTE_UNDER,
    ['A'] = BYTE_UPPER, ['B'] = BYTE_UPPER, ['C'] = BYTE_UPPER, ['D'] = BYTE_UPPER, ['E'] = BYTE_UPPER,
    ['F'] = BYTE_UPPER, ['G'] = BYTE_UPPER, ['H'] = BYTE_UPPER, ['I'] = BYTE_UPPER, ['J'] = BYTE_UPPER,
    ['K'] = BYTE_UPPER, ['L'] = BYTE_UPPER, ['M'] = BYTE_UPPER, ['N'] = BYTE_UPPER, ['O'] = BYTE_UPPER,
    ['P'] = BYTE_UPPER, ['Q'] = BYTE_UPPER, ['R'] = BYTE_UPPER, ['S'] = BYTE_UPPER, ['T'] = BYTE_UPPER,
    ['U'] = BYTE_UPPER, ['V'] = BYTE_UPPER, ['W'] = BYTE_UPPER, ['X'] = BYTE_UPPER, ['Y'] = BYTE_UPPER,
    ['Z'] = BYTE_UPPER,
    ['a'] = BYTE_PLAIN, ['b'] = BYTE_PLAIN, ['c'] = BYTE_PLAIN, ['d'] = BYTE_PLAIN, ['e'] = BYTE_PLAIN,
    ['f'] = BYTE_PLAIN, ['g'] = BYTE_PLAIN, ['h'] = BYTE_PLAIN, ['i'] = BYTE_PLAIN, ['j'] = BYTE_PLAIN,
    ['k'] = BYTE_PLAIN, ['l'] = BYTE_PLAIN, ['m'] = BYTE_PLAIN, ['n'] = BYTE_PLAIN, ['o'] = BYTE_PLAIN,
    ['p'] = BYTE_PLAIN, ['q'] = BYTE_PLAIN, ['r'] = BYTE_PLAIN, ['s'] = BYTE_PLAIN, ['t'] = BYTE_PLAIN,
    ['u'] = BYTE_PLAIN, ['v'] = BYTE_PLAIN, ['w'] = BYTE_PLAIN, ['x'] = BYTE_PLAIN, ['y'] = BYTE_PLAIN,
    ['z'] = BYTE_PLAIN,
    [0x80] = BYTES_PLAIN64, BYTES_PLAIN64,   /* 0x80..0xff */
};

/* Scans one word at p; updates the word-level counts. Returns its end. */
static const unsigned char *scan_word(feat_state *s, const unsigned char *p,
                                      const unsigned char *end, uint64_t *prev) {
    const unsigned char *w = p;
    uint64_t h = FNV_OFFSET;
    unsigned digits = 0, upper = 0, under = 0;
    for (; p < end; p++) {
        unsigned c = *p, k = byte_kind[c];
        if (k != BYTE_PLAIN) {
            if (!k) break;
            if (k == BYTE_UPPER) {
                c += 32;
                upper++;
            }
            digits += k == BYTE_DIGIT;
            under += k == BYTE_UNDER;
        }
        h = (h ^ c) * FNV_PRIME;
    }
    if (!h) h = 1;
    size_t len = (size_t)(p - w);
    s->words++;
    s->word_chars += (uint32_t)len;
    s->digits += digits;
    s->upper += upper;
    s->letters += (uint32_t)len - digits - under;
    if (digits == len) s->numbers++;
    /* snake_case, or camelCase (an upper-case letter after the first) */
    if ((under && under < len) || (upper && upper < len - digits && !(w[0] >= 'A' && w[0] <= 'Z' && upper == 1)))
        s->idents++;
    const vocab_entry *e = s->vocab ? vocab_get(s->vocab, h) : NULL;
    uint32_t f = e ? e->flags : 0, pf = 0;   /* the word's flags, its pair's */
    uint64_t bigram = *prev ? (*prev * 0x9e3779b97f4a7c15ull) ^ h : 0;
    if ((f & LEX_PAIR) && s->pair_start && bigram) {
        const vocab_entry *pe = vocab_get(s->vocab, bigram);
        pf = pe ? pe->flags : 0;
    }
    s->pair_start = (f & LEX_PAIR_START) != 0;
    s->mem += lex_mem(f) + lex_mem(pf);
    /* a capital inside a sentence makes a name or a title ("Rob", "Dan",
     * "Kill Bill"), not the act or the jailbreak the lexicons mean; but a
     * harm that is a name ("Sarin", "Novichok") is the harm however written */
    if (upper == 1 && w[0] >= 'A' && w[0] <= 'Z' && !s->sentence && !(f & LEX_NAMED))
        f &= ~(uint32_t)(LEX_ACT | LEX_ROLE | LEX_HARM);
    s->sentence = 0;
    s->code_words += (f & LEX_CODE) != 0;
    s->math_words += (f & LEX_MATH) != 0;
    s->role_words += ((f & LEX_ROLE) != 0) + ((pf & LEX_ROLE) != 0);
    s->harm_words += ((f & LEX_HARM) != 0) + ((pf & LEX_HARM) != 0);
    s->harm_acts += ((f & LEX_ACT) != 0) + ((pf & LEX_ACT) != 0);
    s->judging += (f & LEX_JUDGE) != 0;
    s->aims += (f & LEX_AIM) != 0;
    s->metas += (f & LEX_META) != 0;
    /* a multiple-choice option: "A." or "(B)", a question, not a request */
    if (len == 1 && upper == 1) s->options += p < end && (*p == '.' || *p == ')');
    s->requests += (s->words == 1 && (f & LEX_ASK)) || (f & LEX_GUIDE) || (s->after_how && (f & LEX_AUX));
    s->after_how = (f & LEX_HOW) != 0;
    if (s->on_word) s->on_word(s->ctx, (const char *)w, len, e, h, bigram);
    *prev = h;
    return p;
}

void feat_feed(feat_state *s, const char *text, size_t len) {
    const unsigned char *p = (const unsigned char *)text, *end = p + len;
    uint64_t prev = 0;
    int line_start = 1;
    s->bytes += (uint32_t)len;
    if (len) s->lines++;
    while (p < end) {
        unsigned c = *p;
        if (byte_kind[c]) {
            p = scan_word(s, p, end, &prev);
            line_start = 0;
            continue;
        }
        if (c == ' ' && !line_start) {   /* the common separator: nothing to count */
            p++;
            continue;
        }
        if (line_start && (c == '\t' || (c == ' ' && p + 1 < end && p[1] == ' '))) s->indented++;
        line_start = 0;
        switch (c) {
        case '\n': s->lines++; line_start = 1; s->sentence = 1; break;
        case '.': case '!': case ':': case '"': case '#': s->sentence = 1; break;
        case '+': case '-': case '*': case '/': case '=': case '^': case '<': case '>': case '%':
            s->ops++;
            break;
        case '(': case '[': s->brackets++; s->sentence = 1; break;
        case ')': case ']': s->brackets++; break;
        case '{': case '}': case ';': s->codepunct++; s->brackets++; break;
        case '\\': case '$': s->latex++; break;
        case '?': s->qmarks++; s->sentence = 1; break;
        default: break;
        }
        p++;
    }
}

static float ratio(uint32_t a, uint32_t b) { return b ? (float)a / (float)b : 0.0f; }

void feat_end(const feat_state *s, float h[FEAT_HAND_N]) {
    h[0] = logf(1.0f + (float)s->bytes) / 8.0f;
    h[1] = logf(1.0f + (float)s->words) / 6.0f;
    h[2] = ratio(s->digits, s->bytes);
    h[3] = ratio(s->ops, s->bytes);
    h[4] = ratio(s->brackets, s->bytes);
    h[5] = logf(1.0f + (float)s->latex);
    h[6] = logf(1.0f + (float)s->codepunct);
    h[7] = ratio(s->indented, s->lines);
    h[8] = logf(1.0f + (float)s->lines);
    h[9] = s->qmarks ? 1.0f : 0.0f;
    h[10] = ratio(s->code_words, s->words);
    h[11] = ratio(s->math_words, s->words);
    /* jailbreaks pile up such words; one alone ("ignore negative
     * numbers", "filter a list") is no sign */
    h[12] = s->role_words > 1 ? logf((float)s->role_words) : 0.0f;
    h[13] = ratio(s->numbers, s->words);
    h[14] = ratio(s->idents, s->words);
    h[15] = ratio(s->upper, s->letters);
    h[16] = ratio(s->word_chars, s->words) / 10.0f;
    h[17] = logf(1.0f + (float)s->numbers);
    h[18] = s->requests ? 1.0f : 0.0f;
    h[19] = logf(1.0f + (float)s->harm_words);
    h[20] = s->requests ? logf(1.0f + (float)(s->harm_words + s->harm_acts)) : 0.0f;
    h[21] = logf(1.0f + (float)s->harm_acts);
    h[22] = logf(1.0f + (float)s->options);
    h[23] = logf(1.0f + (float)s->judging);
    /* a request names its harm in a few words; a story or an article
     * that mentions one has many more words around it */
    h[24] = ratio(s->harm_words + s->harm_acts, s->words);
    h[25] = s->harm_words + s->harm_acts ? logf(1.0f + (float)s->aims) : 0.0f;
    /* a density, but of a text long enough to be a set of rules */
    h[26] = s->words >= 40 ? ratio(s->metas, s->words) : 0.0f;
}
