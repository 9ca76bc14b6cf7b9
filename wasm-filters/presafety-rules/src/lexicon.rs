//! The word → concept lexicon.
//!
//! Words are written grouped by concept (easy to review and extend). At compile
//! time (`const fn`, zero run-time cost) the groups are flattened into one array
//! sorted by word, indexed by first byte, and summarised in a 8 Kibit Bloom
//! filter so that the common case — an ordinary word that is not in the lexicon —
//! costs one hash and one bit test.
//!
//! Lookup of an unknown word falls back to light suffix stripping (plural `s`,
//! `es`, `ies`, `ed`, `ing`, possessive `s`), so groups list base forms plus the
//! irregular forms that matter. Words listed under `Stop` are known but carry no
//! meaning; they stop the suffix stripping (e.g. "made", "makes" must not become
//! the imperative "make").

use crate::mask::{C, Mask};

type Group = (C, &'static [&'static str]);

#[rustfmt::skip]
const GROUPS: &[Group] = &[
    (C::Stop, &["a", "an", "the", "makes", "made", "builds", "built", "creates", "created", "writes", "wrote", "written", "coded", "cooked", "produced", "produces", "scammed", "scammer", "scammers", "hacker", "hackers", "killer", "killers", "shooter", "shooters", "bomber", "bombers", "news", "process", "business", "access", "class", "series", "bus", "virus", "status", "focus", "bias", "this", "that", "is", "its", "was", "has", "his", "does", "goes", "and", "or", "of", "at", "by", "then", "so", "but", "if", "n", "nd", "being", "doing", "going", "having", "seeing", "using", "coming"]),
    (C::MalBehav, &[]),
    (C::YouTold, &[]),
    (C::Critique, &["harmful", "wrong", "offensive", "problematic", "hurtful", "rebut", "rebuttal", "condemn", "criticize", "criticise", "critique", "challenge", "respond", "response", "debunk", "refute", "counter", "counteract", "myth", "myths", "stereotype", "stereotypes", "rhetoric", "dehumanization", "dehumanize", "dehumanized", "racism", "bigotry", "prejudice", "discrimination", "history", "historical", "historically", "false", "untrue", "lie", "lies", "misinformation", "disinformation", "fact", "facts", "research", "study", "studies", "analyze", "analysis"]),
    (C::NegReq, &[]),
    (C::ActVictim, &[]),
    (C::AvEvasion, &[]),
    (C::FullAuto, &["autosear", "autosears", "bumpstock", "bumpstocks", "frt", "dias", "lightninglink", "machinegun", "machineguns", "fullauto", "fullyautomatic", "selectfire", "glockswitch"]),
    (C::EvilPersona, &[]),
    (C::IgnInstr, &[]),
    (C::SysTag, &[]),
    (C::HelpW, &["help", "helping", "assistance"]),
    (C::Never, &["never"]),

    // ------------------------------------------------------------------ grammar
    (C::How, &["how", "hw", "hou"]),
    (C::To, &["to", "2", "too", "ta"]),
    (C::Aux, &["do", "can", "could", "would", "should", "might", "may", "will", "does", "shall", "cn", "must",
        "gonna", "wanna", "need", "needs", "want"]),
    (C::Subj, &["i", "we", "you", "u", "one", "someone", "somebody", "anyone", "anybody", "ya", "ppl", "people",
        "person", "ur", "yourself"]),
    (C::Many, &["many", "much", "long"]),
    (C::Best, &["best", "easiest", "easy", "quickest", "quick", "simplest", "simple", "fastest", "fast",
        "cheapest", "surest", "effective", "efficient", "good", "most", "painless", "painlessly", "reliable",
        "reliably", "guaranteed", "foolproof", "proper", "correct", "optimal", "ideal", "smart", "safest",
        "peaceful", "peacefully", "least", "cleanest", "quietest", "surefire", "quickly", "easily", "better",
        "efficiently", "effectively", "simply", "certain", "perfect", "cleanly", "humane", "gentle"]),
    (C::WayW, &["way", "ways", "method", "methods", "technique", "techniques", "means", "option", "options",
        "strategy", "strategies", "approach", "trick", "tricks", "plan"]),
    (C::HowTo, &["steps", "step", "instructions", "instruction", "guide", "guides", "tutorial", "tutorials", "recipe", "recipes", "procedure", "procedures", "directions", "walkthrough", "howto", "method", "methods", "technique", "techniques", "formula", "formulas", "blueprint", "blueprints", "tips", "ways", "instructable", "diy", "stepbystep", "howto", "walkthrough", "stepwise"]),
    (C::Req, &["tell", "show", "teach", "give", "gimme", "provide", "help", "want", "wanna", "need", "please",
        "pls", "plz", "plan", "planning", "intend", "trying", "try", "going", "gonna", "explain", "describe",
        "list", "detail", "outline", "share", "walk", "instruct", "generate", "write", "create", "make", "build",
        "produce", "draft", "compose", "design", "develop", "code", "program", "show", "lemme", "let", "lets",
        "id", "looking", "wish", "hoping", "desire", "figure", "learn", "know"]),
    (C::Neg, &["without", "not", "never", "dont", "avoid", "avoiding", "prevent", "preventing", "stop", "stopping", "protect", "protecting", "keep", "safe", "safely", "safer", "accidentally", "accidental", "doesnt", "wont", "isnt", "nobody", "cannot", "cant", "instead", "rather", "unlike"]),
    (C::My, &["my", "mine", "our", "mah", "mi"]),
    (C::SelfW, &["myself", "meself", "ourselves", "myslef", "mysef", "muself", "self"]),
    (C::You, &["you", "u", "ya", "yu", "thou", "chatgpt", "gpt", "claude", "gemini", "assistant", "ai", "bot",
        "chatbot", "model", "llm"]),
    (C::Are, &["are", "r", "re", "will", "must", "shall", "were", "become", "becomes", "now"]),
    (C::AsW, &["as", "like", "into"]),
    (C::ActW, &["act", "acting", "behave", "behaving", "respond", "responding", "answer", "answering", "reply",
        "replying", "speak", "speaking", "talk", "talking", "function", "operate", "play", "playing", "roleplay",
        "pose", "posing", "continue", "write", "writing", "pretend", "pretending", "simulate", "simulating",
        "emulate", "emulating", "serve", "impersonate", "identify", "transform", "turn", "switch", "only"]),
    (C::From, &["from"]),
    (C::Now, &["now", "onwards", "forward"]),
    (C::On, &["on", "onward", "onwards"]),
    (C::Into, &["into", "in", "inside"]),
    (C::Get, &["get", "getting", "got", "gets", "gotten", "break", "breaking", "broke", "hack", "hacking", "sneak", "sneaking", "log", "logging", "login", "access", "seek", "seeking", "find", "finding", "reach", "call"]),
    (C::Away, &["away"]),
    (C::Out, &["out", "off", "unconscious", "cold", "asleep"]),
    (C::With, &["with", "w", "wit"]),
    (C::Anything, &["anything"]),
    (C::DoW, &["do", "does"]),
    (C::MakeIdiom, &["sure", "fun", "money", "sense", "time", "friends", "friend", "peace", "progress", "mistakes",
        "mistake", "decision", "decisions", "room", "space", "changes", "change", "appointment", "reservation",
        "noise", "difference", "amends", "shaped", "themed", "birthday", "cake", "cookies", "cookie", "bath",
        "photo", "photos", "joke", "jokes", "puns", "pun", "meme", "memes", "costume", "diorama", "model",
        "replica", "prop", "props", "emoji", "drawing", "painting", "sound", "effect", "effects", "animation",
        "graphic", "icon", "logo", "toy", "toys", "lego", "pinata", "card", "cocktail", "drink", "shot", "shots",
        "playlist", "sandwich", "salad", "burger", "dish", "pizza", "pie", "smoothie", "game", "level", "mod",
        "calorimeter", "fake"]),

    // ---------------------------------------------------- generic harm vocabulary
    (C::Make, &["make", "making", "mak", "build", "building", "construct", "constructing", "assemble", "assembling",
        "manufacture", "manufacturing", "produce", "producing", "production", "craft", "crafting", "prepare",
        "preparing", "cook", "cooking", "brew", "brewing", "rig", "mix", "mixing", "combine", "combining",
        "formulate", "whip", "create", "creating", "synthesize", "synthesise", "synthesizing", "synthesising",
        "synthesis", "fabricate", "fabricating", "homemade", "improvise", "improvised", "obtain",
        "acquire", "buy", "purchase", "order", "source", "get", "grow", "growing", "culture", "cultivate",
        "extract", "extracting", "weaponize", "weaponise", "setup", "set", "design", "designing",
        "engineer", "engineering", "develop", "developing", "generate", "print", "printing", "put",
        "cooks", "makin", "mkae", "amke"]),
    (C::Synth, &["synthesize", "synthesise", "synthesizing", "synthesising", "synthesis", "syntheses", "synthesization", "precursor", "precursors", "extract", "extracting", "extraction", "purify", "purifying", "purification", "refine", "refining", "isolate", "isolating", "reagent", "reagents", "route", "routes", "yield", "reaction", "reduction", "recrystallize", "recrystallization", "distill", "distilling", "distillation", "lab", "labs", "cook", "cooking", "batch", "manufacture", "manufacturing", "produce", "producing", "production", "brew", "brewing", "make", "making", "homemade", "quantities", "quantity", "grams", "ratios", "ratio", "temperatures", "glassware", "chemist", "recipe", "recipes", "formula"]),
    (C::Create, &["write", "writing", "develop", "developing", "generate", "generating", "implement", "implementing", "create", "creating", "build", "building", "make", "making", "craft", "crafting", "design", "designing", "produce", "author", "compose", "draft", "deploy", "deploying", "spread", "release", "distribute", "automate", "automating", "setup", "construct", "engineer", "program", "programming", "code", "coding"]),
    (C::Defense, &["protect", "protecting", "protection", "protections", "defend", "defending", "defense", "defence", "defenses", "defences", "defensive", "prevent", "preventing", "prevention", "detect", "detecting", "detector", "detectors", "detects", "spot", "spotting", "recognize", "recognise", "recognizing", "recognising", "identify", "identifying", "avoid", "avoiding", "mitigate", "mitigating", "mitigation", "remove", "removing", "removal", "remover", "block", "blocking", "secure", "securing", "safe", "safely", "safety", "scan", "scanner", "scanning", "anti", "antimalware", "awareness", "report", "reporting", "recover", "recovering", "recovery", "patch", "patching", "harden", "hardening", "incident", "signs", "warning", "warnings", "flags", "respond", "response", "analyze", "analyse", "analysis", "analyzing", "honeypot", "firewall", "yara", "sigma", "quarantine", "decrypt", "decryptor", "restore", "backup", "backups", "stop", "stopping", "fight", "fighting", "combat", "combating", "counter", "guard", "shield", "immune", "immunity", "vaccine", "vaccines", "treat", "treatment", "deter", "deterrent", "cleanup", "remediation", "contamination", "former", "abandoned", "catch", "catches", "cleaner", "defuse", "antidote", "symptoms", "exposure", "treated", "victim", "victims", "scammed", "targeted", "suspicious"]),
    (C::DefenseCore, &["protect", "protecting", "protection", "prevent", "preventing", "prevention", "detect", "detecting", "spot", "spotting", "recognize", "recognise", "recognizing", "identify", "identifying", "avoid", "avoiding", "report", "reporting", "defend", "defending", "mitigate", "awareness", "train", "training", "educate", "education", "warn", "warning", "signs"]),
    (C::Awareness, &["awareness", "training", "train", "simulation", "simulated", "employees", "employee", "staff", "drill", "exercise", "educate", "education", "educational", "teach", "teaching", "class", "course", "workshop", "phishing-test", "test", "testing", "example", "examples", "spot", "recognize", "identify", "avoid", "detect", "detecting", "detection", "verify", "verifying", "verification", "authenticate", "check", "checking", "bouncer", "bouncers", "cashier", "cashiers", "lender", "lenders"]),
    (C::NonCode, &["essay", "essays", "article", "articles", "blog", "post", "posts", "story", "stories", "paper", "papers", "summary", "summaries", "presentation", "poem", "song", "overview", "explanation", "definition", "quiz", "lesson", "lessons", "course", "class", "book", "thesis", "report", "documentary", "slide", "slides", "memo", "policy", "policies", "plan", "checklist", "rule", "rules", "description", "history", "timeline", "faq", "tweet", "caption", "headline", "riddle", "lyrics", "review", "comparison", "analysis", "research", "study", "list", "names", "families", "examples", "example", "detector", "joke", "jokes", "limerick", "haiku", "screenplay", "novel", "paragraph", "sentence", "title", "tagline", "awareness", "training", "warning", "notice", "banner", "poster", "infographic", "chart", "diagram", "quiz", "exam", "test", "tests", "unit", "case", "statistics", "stats", "news", "glossary", "about", "regarding", "explaining", "describing", "summarizing", "detection", "scanner", "protection"]),
    (C::HistQ, &["history", "historical", "historically", "holocaust", "nazi", "nazis", "hitler", "ww2", "wwii", "ww1", "wwi", "manhattan", "hiroshima", "nagasaki", "oppenheimer", "1945", "1944", "1942", "century", "ancient", "medieval", "invented", "discovered", "discovery", "origin", "origins", "era", "wartime", "soviet", "documentary", "museum", "memorial", "trivia", "timeline", "infamous", "trial", "convicted", "sentenced", "rwandan", "rwanda", "genocides", "dehumanized", "dehumanizing", "dehumanization", "rhetoric", "stereotype", "stereotypes", "racism", "antisemitism", "discrimination", "bias", "prejudice", "myth", "myths", "debunk", "refute", "counter", "respond", "combat", "tokyo", "aum", "unabomber", "mcveigh", "oklahoma", "breaking", "walter", "heisenberg", "jesse", "episode", "season", "series", "character", "characters", "plot", "film", "movie", "scene"]),
    (C::Why, &["why", "how", "what", "who", "when", "where"]),
    (C::PastAux, &["did", "were", "was", "had", "first"]),
    (C::Game, &["game", "games", "gaming", "minecraft", "fortnite", "roblox", "gta", "skyrim", "valorant",
        "csgo", "counterstrike", "cs2", "terraria", "zelda", "dnd", "tabletop", "rpg", "npc", "npcs",
        "boss", "level", "player", "players", "pvp", "mod", "mods", "sims", "cod", "warzone", "overwatch",
        "pubg", "apex", "halo", "fallout", "rust", "ark", "dayz", "stardew", "pokemon", "mario", "chess",
        "checkers", "poker", "paintball", "airsoft", "laser", "lasertag", "nerf", "unity", "unreal", "godot",
        "sprite", "character", "quest", "dungeon", "boardgame", "card", "cards", "deck", "opponent", "team",
        "match", "fps", "mmo", "steam", "xbox", "playstation", "nintendo", "simulator", "sandbox", "spell",
        "spells", "potion", "potions", "inventory", "crafting"]),
    (C::Tech, &["eslint", "eslintrc", "lint", "linter", "linting", "linters", "prettier", "gitignore", "git", "regex", "regexp", "file", "files", "folder", "folders", "directory", "line", "lines", "warning", "warnings", "flake8", "pylint", "mypy", "typescript", "tsc", "ts", "css", "html", "firewall", "case", "whitespace", "errors", "error", "compiler", "npm", "cargo", "clippy", "rubocop", "sonar", "sonarqube", "checkstyle", "spelling", "typos", "typo", "grammar", "formatting", "test", "tests", "column", "columns", "cache", "ssl", "certificate", "robots", "stylelint", "pep8", "black", "ruff", "webpack", "babel", "jest", "pytest", "editorconfig", "vscode", "ide", "intellij", "noqa", "pragma", "attribute", "decorator", "annotation", "process", "processes", "thread", "threads", "pid", "task", "tasks", "session", "sessions", "job", "jobs", "daemon", "container", "containers", "pod", "pods", "linux", "unix", "bash", "shell", "terminal", "python", "signal", "sigkill", "sigterm", "cmd", "server", "servers", "tmux", "docker", "kubernetes", "kubectl", "k8s", "node", "nodejs", "java", "windows", "loop", "loops", "function", "functions", "query", "queries", "connection", "connections", "port", "ports", "zombie", "orphan", "subprocess", "subprocesses", "worker", "workers", "service", "services", "systemd", "tab", "tabs", "browser", "excel", "sql", "database", "cell", "cells", "row", "rows", "mysql", "postgres", "api", "request", "requests", "bug", "bugs", "debug", "debugging", "langchain", "openai", "sdk", "code", "script", "scripts", "variable", "variables", "exception", "exceptions", "stack", "branch", "commit", "merge", "repo", "repository", "build", "pipeline", "ci", "deploy", "tree", "trees", "element", "elements", "dom", "component", "components", "widget", "react", "vue", "angular", "django", "flask", "rails", "spring", "dotnet", "csharp", "golang", "kotlin", "swift", "rust", "ruby", "php", "perl", "powershell", "android", "ios", "app", "apps", "ui", "frontend", "backend", "json", "yaml", "xml", "csv", "config", "dependency", "dependencies", "package", "packages", "module", "modules", "library", "import", "header", "headers", "parser", "token", "tokens", "cron", "crontab", "vim", "emacs", "nginx", "apache", "aws", "azure", "gcp", "lambda", "heroku", "unittest", "mock", "mocks", "hook", "hooks", "event", "events", "listener", "callback", "promise", "async", "await", "mutex", "deadlock", "spark", "hadoop", "pandas", "numpy", "dataframe", "matrix", "array", "arrays", "list", "dict", "map", "hashmap", "pointer", "pointers", "memory", "heap", "cpu", "gpu", "ram", "disk", "kernel", "driver", "drivers", "tty", "pty", "ssh", "tcp", "udp", "http", "https", "dns", "ping", "curl", "wget", "jenkins", "github", "gitlab", "jira", "slack", "vm", "vms", "instance", "instances", "switch", "statement", "statements", "keyword", "keywords", "license"]),
    (C::Legal, &["legal", "illegal", "legally", "law", "laws", "lawful", "unlawful", "regulation", "regulations", "regulated", "penalty", "penalties", "punishment", "sentence", "sentencing", "court", "lawyer", "attorney", "jail", "prison", "atf", "nfa", "allowed", "legislation", "statute", "crime", "crimes", "criminal", "charges", "charged", "prosecuted", "prosecution", "compliance", "compliant", "aml", "fine", "fines", "consequences", "consequence", "offense", "offence", "felony", "misdemeanor", "rights", "constitution", "ban", "banned", "policy"]),
    (C::Fiction, &["novel", "novels", "story", "stories", "fiction", "fictional", "screenplay", "villain",
        "villains", "protagonist", "antagonist", "character", "characters", "roleplay", "chapter",
        "scene", "hypothetically", "hypothetical", "imagine", "fantasy", "movie", "film", "book", "plot", "poem",
        "script", "game", "thriller", "mystery", "narrative", "tale", "writing", "writer", "author", "fanfic",
        "fanfiction", "dialogue", "monologue", "play", "episode", "sitcom", "anime", "manga", "comic", "rp",
        "universe", "world", "simulation", "pretend", "pretending", "dream", "bedtime", "lullaby"]),
    (C::Detail, &["exact", "exactly", "precise", "precisely", "detailed", "detail", "details", "specific",
        "specifics", "specifically", "accurate", "accurately", "realistic", "realistically", "real", "actual",
        "actually", "working", "functional", "measurements", "measurement", "quantities", "quantity", "amounts",
        "ingredients", "ingredient", "step", "steps", "full", "complete", "verbatim", "technical", "thorough",
        "thoroughly", "comprehensive", "grams", "ratios", "temperatures", "materials", "chemicals", "recipe",
        "recipes", "instructions", "procedure", "formula", "blueprint", "schematic", "schematics", "list",
        "accuracy", "true", "practical", "operational", "usable", "replicable", "reproducible"]),
    (C::Photo, &["photo", "photos", "photograph", "photography", "photographer", "picture", "pictures", "pic", "pics", "portrait", "portraits", "camera", "cameras", "lens", "video", "videos", "film", "filming", "scene", "scenes", "footage", "headshot", "headshots", "photoshoot", "selfie", "selfies", "shoot", "shot", "shots", "exposure", "iso", "aperture", "tripod", "drone", "timelapse", "movie", "music", "basketball", "hoops", "hoop", "free", "throw", "basket", "goal", "goals", "soccer", "hockey", "puck", "pool", "darts", "dart", "arrow", "archery", "bow", "target", "targets", "range", "clay", "skeet", "breeze", "star", "stars", "sky", "moon", "milky", "sunset", "wedding", "model", "models", "bride", "groom", "email", "message", "text", "dm", "line", "question", "questions", "idea", "ideas", "vibe", "mood", "vibes", "moods", "sleep", "appetite", "motivation", "buzz", "battery", "fever", "boredom", "cold", "pain", "time", "conversation", "joke", "jokes", "plant", "plants", "kindness", "compliment", "compliments", "smile", "wink", "glare", "dirty"]),
    (C::Animal, &["dog", "dogs", "cat", "cats", "pet", "pets", "mouse", "mice", "rat", "rats", "bird", "birds", "fish", "animal", "animals", "hamster", "deer", "roadkill", "squirrel", "squirrels", "raccoon", "possum", "opossum", "snake", "snakes", "chicken", "chickens", "cow", "cows", "pig", "pigs", "goat", "sheep", "horse", "rabbit", "rabbits", "mole", "moles", "gopher", "gophers", "wasp", "wasps", "bee", "bees", "ant", "ants", "roach", "roaches", "cockroach", "cockroaches", "bug", "bugs", "insect", "insects", "spider", "spiders", "flea", "fleas", "tick", "ticks", "mosquito", "mosquitoes", "fly", "flies", "slug", "slugs", "snail", "snails", "termite", "termites", "aphid", "aphids", "weed", "weeds", "mold", "mould", "fungus", "bacteria", "germs", "virus", "lice", "grub", "grubs", "vermin", "pest", "pests", "rodent", "rodents", "fox", "coyote", "bear", "wolf", "lobster", "crab", "turkey", "duck", "geese", "goose", "pigeon", "pigeons", "crow", "crows", "bat", "bats", "frog", "toad", "lizard", "tree", "trees", "stump", "roots", "grass", "moss", "algae", "plant", "plants", "fruit", "cell", "cells", "cancer", "tumor", "tumour", "parasite", "parasites", "worm", "worms", "mites", "bedbugs", "fish", "livestock", "hog", "hogs", "boar", "buck", "elk", "hunting", "hunt", "hunter", "prey", "butcher", "butchering", "slaughterhouse", "meat", "carcass", "fishing", "deer", "pheasant", "quail", "dove", "doves", "skunk", "beaver", "weasel", "ferret", "vole", "voles", "lawn", "garden", "crops", "clover", "dandelions", "ivy", "bamboo"]),

    // ----------------------------------------------------------------- weapons
    (C::ExplWeak, &["bomb", "bombs", "explosive", "explosives", "grenade", "grenades", "dynamite", "tnt", "nitroglycerin", "nitroglycerine", "landmine", "landmines", "detonator", "detonators", "blasting", "incendiary", "firebomb", "firebombs", "shrapnel", "boom", "bombs", "bombe", "bombz", "explosives", "explosivo", "bomba", "bombe"]),
    (C::ExplStrong, &["pipebomb", "pipebombs", "ied", "ieds", "napalm", "c4", "semtex", "tatp", "hmtd",
        "petn", "rdx", "anfo", "molotov", "molotovs", "detonator", "detonators", "thermite", "nitrocellulose",
        "ammonal", "flashpowder", "blackpowder", "nitroglycerin", "nitroglycerine", "firebomb", "firebombs",
        "nuke", "nukes", "carbomb", "claymore", "plastique", "slurry", "boobytrap",
        "boobytraps", "grenade", "grenades", "landmine", "landmines", "dirtybomb", "suicidevest", "boobytrap", "c4", "pipebomb"]),
    (C::BombMod, &["pipe", "nail", "car", "dirty", "letter", "pressure", "cooker", "fertilizer", "fertiliser",
        "atomic", "nuclear", "hydrogen", "suitcase", "truck", "backpack", "mail", "package", "parcel", "suicide",
        "shoe", "vest", "homemade", "improvised", "nailbomb", "blasting", "sticky", "remote",
        "time", "timed", "barrel", "chemical", "gas", "fragmentation", "frag", "cluster", "thermobaric",
        "radiological", "neutron", "fission", "fusion", "plutonium", "uranium"]),
    (C::BombBenign, &["bath", "cake", "cakes", "shaped", "themed", "seed", "seeds", "photo", "photobomb",
        "calorimeter", "cherry", "fork", "f", "costume", "glitter", "jager", "jagerbomb", "sake", "drink",
        "drinks", "shot", "shots", "emoji", "squad", "disposal", "sniffing", "threat", "threats", "shelter",
        "shelters", "dog", "dogs", "defuse", "defusal", "game", "games", "minecraft", "cookie", "cookies",
        "cupcake", "cupcakes", "cocktail", "cocktails", "fizzy", "fizz", "soap", "salts", "lush", "glitterbomb",
        "love", "lovebomb", "lovebombing", "zip", "logic", "decompression", "data", "photobombed",
        "joke", "prop", "props", "replica", "toy", "pinata", "birthday", "party", "dessert", "chocolate",
        "bomber", "jacket", "jackets", "cannonball", "dive", "diving", "pool", "water", "balloon",
        "balloons", "stink", "stinkbomb", "smoke", "confetti", "flavor", "flavour", "tea", "cyclone", "hair",
        "sound", "effect", "sfx", "plot", "scene", "movie", "film", "story", "novel", "history", "historical",
        "minecraft", "fortnite", "roblox", "valorant", "csgo", "counterstrike", "worms", "bomberman",
        "tf2", "terraria", "nerf", "code", "loop", "fbomb", "detector", "detectors",
        "dating"]),
    (C::Chem, &["ricin", "abrin", "anthrax", "sarin", "vx", "tabun", "soman", "cyclosarin", "novichok", "botulinum", "phosgene", "bioweapon", "bioweapons", "cyanide", "smallpox", "tetrodotoxin", "strychnine", "thallium", "polonium", "dimethylmercury", "aconite", "aconitine", "mycotoxin", "saxitoxin", "lewisite", "zyklon", "hcn", "weaponized"]),
    (C::ChemNoun, &["weapon", "weapons", "agent", "agents", "warfare", "gas", "gases", "attack", "attacks", "bomb", "bombs", "arsenal", "payload", "terror", "terrorism"]),
    (C::ChemMod, &["chemical", "biological", "bio", "nerve", "blister", "choking", "radiological", "toxic", "germ", "bacteriological", "biochemical", "mustard", "sarin", "vx", "phosgene", "chlorine", "cyanide", "tear", "poison", "poisonous", "lethal", "deadly"]),
    (C::Weaponize, &["weaponize", "weaponise", "weaponizing", "weaponising", "weaponized", "aerosolize",
        "aerosolise", "aerosolizing", "aerosolized", "culture", "culturing", "cultivate", "cultivating", "grow",
        "growing", "disperse", "dispersing", "dispersal", "deploy", "deploying", "release", "releasing",
        "spread", "spreading", "extract", "extracting", "purify", "purifying", "refine", "refining",
        "concentrate", "concentrating", "enhance", "enhancing", "synthesize", "synthesise", "synthesizing",
        "synthesis", "make", "making", "produce", "producing", "manufacture", "create", "creating", "build",
        "obtain", "acquire", "buy", "get", "isolate", "isolating", "stockpile", "stockpiling",
        "brew", "cook", "prepare", "preparing", "process", "processing", "harvest", "harvesting", "infect",
        "contaminate", "contaminating", "poison", "poisoning", "inject", "injecting", "distribute",
        "distributing", "smuggle", "transmissible", "transmissibility", "lethality", "virulence", "virulent"]),
    (C::Toxic, &["toxic", "poisonous", "poison", "deadly", "lethal", "noxious", "harmful", "killer",
        "choking", "nerve", "mustard", "tear", "suffocating", "asphyxiating", "fatal", "dangerous", "chlorine",
        "chloramine", "phosgene", "cyanide", "hydrogen", "arsine", "phosphine"]),
    (C::Gas, &["gas", "gases", "gasses", "fumes", "fume", "vapor", "vapour", "vapors", "vapours", "smoke", "cloud",
        "agent", "aerosol", "mist", "spray"]),
    (C::Gun, &["gun", "guns", "firearm", "firearms", "pistol", "pistols", "rifle", "rifles", "handgun",
        "handguns", "ar15", "ak47", "ak", "ar", "glock", "glocks", "weapon", "weapons",
        "shotgun", "shotguns", "smg", "receiver", "receivers", "lower", "lowers", "uzi", "mac10",
        "revolver", "carbine", "m4", "m16", "sidearm", "zip", "zipgun", "suppressor", "silencer", "silencers",
        "suppressors", "frame", "slide", "barrel", "machinegun", "pew", "semiautomatic", "semiauto", "ar15", "ak47", "mac10", "ghostgun", "ghostguns", "zipgun"]),
    (C::GhostGun, &["silencer", "silencers", "suppressor", "suppressors", "solventtrap"]),
    (C::Ghost, &["untraceable", "ghost", "unserialized", "unserialised", "unregistered", "homemade", "diy", "polymer80", "p80", "80", "serialless", "unmarked", "invisible",
        "undetectable", "plastic", "printable", "improvised", "blank", "unlicensed", "untraced",
        "scratched"]),
    (C::ThreeD, &["3d"]),
    (C::PrintW, &["print", "printed", "printing", "printer", "printable", "prints", "stl", "stls", "cad",
        "files", "file", "cnc", "mill", "milling", "machine", "machining", "jig"]),
    (C::Convert, &["convert", "converting", "conversion", "conversions", "modify", "modifying", "modification",
        "mod", "turn", "turning", "make", "making", "transform", "change", "changing", "upgrade", "alter",
        "altering", "rework", "switch", "install", "installing", "add", "adding", "build", "building", "fit",
        "retrofit", "drill", "machine", "machining", "3d", "print", "printing", "sear", "file"]),
    (C::Full, &["full", "fully", "select", "selective", "burst", "machine", "auto", "automatic"]),
    (C::AutoW, &["auto", "automatic", "automatics", "autos", "fire", "mode", "gun", "guns"]),
    (C::Sear, &["sear", "sears", "switch", "switches", "conversion"]),

    // ----------------------------------------------------------------- violence
    (C::Act, &["kill", "killing", "murder", "murdering", "poison", "poisoning", "stab", "stabbing", "shoot", "shooting", "strangle", "strangling", "choke", "suffocate", "suffocating", "smother", "smothering", "drown", "drowning", "kidnap", "kidnapping", "kidnaping", "abduct", "abducting", "torture", "torturing", "assault", "assaulting", "maim", "maiming", "hurt", "hurting", "harm", "harming", "injure", "injuring", "attack", "attacking", "assassinate", "assassinating", "behead", "beheading", "lynch", "lynching", "rape", "raping", "dismember", "dismembering", "bludgeon", "massacre", "slaughter", "mutilate", "mutilating", "disfigure", "cripple", "paralyze", "unalive", "electrocute", "drugging", "roofie", "roofies", "enslave", "stalk", "stalking", "abuse", "abusing", "molest", "molesting", "strangulate", "gut", "decapitate", "castrate", "acid", "burnalive", "torch", "torching"]),
    (C::WeaponizeW, &["weaponize", "weaponise", "weaponizing", "weaponising", "weaponized", "arm", "arming", "rig", "rigging", "strap", "attach", "drop", "dropping", "throw", "throwing", "plant", "planting", "detonate", "detonating", "hurl", "launch", "launching", "set", "setoff"]),
    (C::AccidentW, &["accident", "accidental", "suicide", "natural", "overdose", "heart"]),
    (C::RunW, &["run", "running", "ran"]),
    (C::FireW, &["fire", "fires", "ablaze", "alight", "aflame", "arson"]),
    (C::DownW, &["down", "over"]),
    (C::BurnW, &["burn", "burning", "burned", "burnt", "set", "setting", "light", "lighting", "start", "starting"]),
    (C::BeatW, &["beat", "beating", "kick", "kicking", "stab", "stabbing", "choke", "choking", "strangle", "burn", "starve", "starving", "bludgeon", "punch", "punching", "stomp", "stomping", "hit", "hitting", "torture", "bleed", "drown", "whip", "whipping"]),
    (C::DeathW, &["death"]),
    (C::Victim, &["someone", "somebody", "someones", "somebodys", "person", "persons", "people", "neighbor",
        "neighbour", "neighbors", "neighbours", "wife", "husband", "spouse", "boss", "coworker", "colleague", "teacher", "teachers", "classmate", "classmates", "ex", "exs", "girlfriend", "boyfriend",
        "gf", "bf", "mom", "mother", "dad", "father", "parents", "parent", "brother", "sister", "sibling",
        "child", "children", "kid", "kiddo", "baby", "toddler", "infant", "him", "her", "stranger", "strangers",
        "cop", "cops", "officer", "officers", "police", "policeman", "president", "politician", "politicians",
        "senator", "mayor", "judge", "crowd", "crowds", "students", "student", "family", "roommate", "landlord",
        "partner", "enemy", "enemies", "rival", "human", "humans", "man", "woman", "men", "women", "girl",
        "boy", "girls", "boys", "guy", "guys", "relative", "uncle", "aunt", "grandma", "grandpa", "grandmother",
        "grandfather", "son", "daughter", "stepson", "stepdaughter", "stepmother", "stepfather", "elderly",
        "victim", "victims", "anyone", "everyone", "everybody", "pedestrian", "pedestrians", "worshippers",
        "congregation", "bully", "bullies", "nephew", "niece", "cousin", "fiance", "fiancee", "lover",
        "employer", "employee", "manager", "supervisor", "customer", "client", "doctor", "nurse", "patient",
        "patients", "tenant", "tenants", "coach", "pastor", "priest", "celebrity", "ceo", "leader", "minister",
        "governor", "congressman", "mp", "king", "queen", "prince", "princess", "jews", "muslims", "christians",
        "immigrants", "gays", "protesters", "protestors", "homeless", "hostage", "hostages", "witness",
        "informant", "snitch", "them", "passengers", "shoppers", "attendees", "audience", "kids", "infants",
        "babies", "toddlers", "pupils", "schoolchildren", "mum", "mommy", "daddy", "stepdad", "stepmom",
        "hubby", "wifey", "bestie", "bff", "coworkers", "colleagues", "classmate", "teen", "teenager"]),
    (C::Partner, &["wife", "husband", "spouse", "girlfriend", "boyfriend", "gf", "bf", "ex", "exs", "partner",
        "fiance", "fiancee", "lover", "crush", "coworker", "colleague", "boss", "neighbor",
        "neighbour", "roommate", "someone", "somebody", "someones", "somebodys", "stranger", "employee",
        "friend", "friends", "sister", "brother", "mom", "dad", "mother", "father", "hubby", "wifey", "her",
        "him", "person", "people", "celebrity", "classmate", "teacher", "landlord", "tenant", "target",
        "victim"]),
    (C::Caught, &["caught", "catching", "detected", "detection", "detect", "noticed", "noticing", "notice", "knowing", "knows", "know", "suspicion", "suspecting", "suspect", "suspects", "evidence", "trace", "traces", "trail", "fingerprints", "fingerprint", "dna", "finding", "finds", "found", "tracked", "traced", "discovered", "seeing", "realizing", "realising", "noticeable", "traceable", "trackable", "arrested", "busted", "identified", "leaving", "witnesses", "cameras", "camera", "cctv", "footprints", "consequences", "punished", "prosecuted", "jail", "prison", "autopsy", "toxicology", "forensics", "forensic", "police", "cops", "alerting", "alarm", "alarms", "trigger", "triggering", "flagged", "flagging", "logs"]),
    (C::Evade, &["undetected", "undetectable", "untraceable", "traceless", "unnoticed", "alibi", "unseen", "unnoticeable", "covertly", "stealthily", "discreetly", "untracked", "anonymously", "secretly", "silently", "quietly", "unsuspecting", "unknowingly", "sneakily", "invisibly", "incognito", "hide", "hides", "hidden", "background", "invisible", "persist", "persistence", "startup"]),
    (C::NegEv, &["without", "not", "never", "no", "avoid", "avoiding", "wont", "dont", "doesnt", "cant", "nobody",
        "noone", "unless", "evade", "evading", "escape", "escaping", "beat", "fool", "fooling", "before",
        "hide", "hiding", "nor", "zero", "minimal", "minimize", "less", "low", "leave", "leaving", "wont",
        "cant", "dont", "doesnt"]),
    (C::CoverW, &["cover", "covering", "hide", "hiding", "erase", "erasing", "destroy", "destroying", "wipe",
        "wiping", "clean", "cleaning", "remove", "removing", "get", "dispose", "disposing", "burn", "bleach",
        "dissolve", "conceal", "concealing", "leave", "leaving"]),
    (C::Tracks, &["tracks", "evidence", "trail", "traces", "trace", "fingerprints", "dna", "blood", "prints",
        "footprints", "crime", "scene", "weapon", "body", "bodies", "corpse", "corpses", "remains", "murder"]),
    (C::Body, &["body", "bodies", "corpse", "corpses", "remains", "cadaver", "carcass"]),
    (C::BodyBenign, &["fat", "odor", "odour", "hair", "acne", "aches", "ache", "lotion", "wash", "spray", "weight", "pain", "image", "language", "heat", "temperature", "shop", "armor", "armour", "scrub", "butter", "oil", "count", "type", "mass", "positivity", "dysmorphia", "shaming", "clock", "paint", "part", "parts", "work", "kit", "panel", "panels"]),
    (C::Dispose, &["dispose", "disposing", "disposal", "hide", "hiding", "rid", "dissolve", "dissolving", "bury", "burying", "dump", "dumping", "dismember", "dismembering", "cremate", "destroy", "destroying", "conceal", "concealing"]),
    (C::Knock, &["knock", "knocking", "put", "render", "make", "drug", "drugging", "sedate", "chloroform", "choke"]),
    (C::Spike, &["spike", "spiking", "lace", "lacing", "drug", "drugging", "roofie", "roofies", "slip", "slipping", "poison", "poisoning", "tamper", "contaminate", "spiked", "laced"]),
    (C::Drink, &["drink", "drinks", "food", "coffee", "tea", "beverage", "beer", "wine", "cocktail", "meal",
        "water", "juice", "soda", "glass", "cup", "dinner", "lunch", "breakfast", "soup", "smoothie", "milk",
        "bottle", "medication", "medicine", "pills", "inhaler", "insulin", "iv"]),
    (C::Mass, &["mass", "many", "most", "maximum", "maximize", "maximise", "max", "lots", "hundreds", "dozens",
        "thousands", "possible", "crowd", "crowded", "crowds", "casualties", "school", "schools", "church",
        "mosque", "synagogue", "temple", "concert", "festival", "stadium", "mall", "parade", "subway",
        "airport", "classroom", "campus", "office", "rally", "market"]),
    (C::Casualties, &["casualties", "deaths", "dead", "victims", "people", "kills", "killed", "injuries", "bodycount",
        "damage", "carnage", "shooting", "shootings", "massacre", "attack", "attacks", "bombing"]),

    // ---------------------------------------------------------------- self-harm
    (C::EndTake, &["end", "ending", "take", "taking", "ended", "took", "finish", "finishing", "stop", "terminate",
        "terminating", "conclude"]),
    (C::Life, &["life", "lives", "existence", "suffering", "pain", "myself", "living"]),
    (C::SelfActStrong, &["kill", "killing", "murder", "hang", "hanging", "shoot", "shooting", "drown", "drowning", "poison", "poisoning", "suffocate", "suffocating", "off", "unalive", "electrocute", "gas", "overdose", "od", "end", "strangle", "asphyxiate", "bleed", "die", "delete", "erase", "destroy", "behead", "stab", "stabbing", "jump"]),
    (C::AllW, &["all"]),
    (C::ItW, &["it"]),
    (C::EndW, &["end", "ending"]),
    (C::HeightW, &["bridge", "bridges", "building", "buildings", "cliff", "cliffs", "roof", "rooftop", "height", "heights", "high", "floor", "story", "storey", "tower", "balcony", "window", "garage", "overpass", "skyscraper", "tall", "feet", "meters", "metres"]),
    (C::JumpW, &["jump", "jumping", "leap", "leaping", "throw", "fall", "drop"]),
    (C::SelfActWeak, &["cut", "cutting", "hurt", "hurting", "harm", "harming", "burn", "burning", "starve", "starving", "injure", "injuring", "punish", "punishing", "scratch", "scratching", "bleed", "bleeding", "bruise", "bruising", "hit", "hitting", "choke", "choking", "mutilate", "mutilating", "slice", "carve", "purge", "purging", "slit", "slitting", "slash", "slashing"]),
    (C::DoneW, &["done", "tired", "sick", "finished", "exhausted"]),
    (C::OverdoseW, &["overdose", "overdosing", "od"]),
    (C::WristW, &["wrist", "wrists", "vein", "veins", "throat", "artery", "arteries"]),
    (C::ShStrong, &["suicide", "suicides", "kms", "unalive", "selfdelete", "sewerslide", "seppuku", "harakiri", "killmyself", "endmylife"]),
    (C::ShWeak, &["selfharm", "selfharming", "selfinjury", "selfmutilation", "selfharmed", "selfinjure"]),
    (C::ShHelp, &["hotline", "hotlines", "crisis", "therapist", "therapists", "therapy", "counselor", "counsellor", "counseling", "counselling", "support", "supporting", "supportive", "prevention", "prevent", "preventing", "stop", "stopping", "quit", "quitting", "cope", "coping", "signs", "sign", "resources", "helpline", "lifeline", "talk", "talking", "recover", "recovery", "recovering", "heal", "healing", "urges", "urge", "treat", "treatment", "wound", "wounds", "bandage", "scar", "scars", "accidentally", "accident", "accidental", "shaving", "kitchen", "gym", "workout", "injury", "doctor", "nurse", "friend", "friends", "someone", "somebody", "loved", "son", "daughter", "child", "teen", "teenager", "student", "patient", "patients", "client", "clients", "warning", "risk", "risks", "factors", "statistics", "rates", "rate", "awareness", "research", "history", "movie", "book", "song", "poem", "essay", "article", "character", "novel", "story", "hamlet", "romeo", "juliet", "shakespeare", "myth", "religion", "philosophy", "ethics", "euthanasia", "assisted", "dignitas", "legal", "law", "laws", "covered", "insurance", "policy", "clause", "stats", "lyrics", "squad", "mission", "prevent", "alive", "safe", "safety", "first", "aid", "er", "hospital", "911", "emergency", "control", "symptoms", "medical", "medically", "survivor", "survivors", "grief", "grieving", "loss", "lost", "memorial", "anniversary", "bereavement", "dog", "cat", "pet", "plant", "plants", "battery", "phone", "game", "character"]),
    (C::Dose, &["dose", "doses", "dosage", "dosages", "amount", "amounts", "pills", "pill", "tablets", "tablet",
        "capsules", "capsule", "mg", "milligrams", "grams", "g", "quantity", "quantities", "bottle", "bottles",
        "packet", "packets", "units", "ml", "cc", "overdose", "od", "much", "many", "enough", "lethal",
        "fatal"]),
    (C::Die, &["die", "dying", "overdose", "od", "perish"]),
    (C::Wake, &["wake", "waking", "woke", "breathing", "breathe"]),
    (C::WantW, &["want", "wanna", "going", "gonna", "ready", "deserve", "wish", "plan", "planning", "decided",
        "deciding", "trying", "try", "need", "intend", "intending", "prepared", "preparing", "about", "wanting",
        "hope", "hoping", "would", "rather", "like", "choose", "chose", "tried", "attempt", "attempting"]),

    // ---------------------------------------------------- jailbreak / injection
    (C::Grandma, &["grandmother", "grandma", "granny", "nana", "grandpa", "grandfather", "gran", "grandmom",
        "grandmama", "grannie", "nan", "oma", "abuela", "babushka", "grandparent", "grandparents", "deceased",
        "late"]),
    (C::YouAre, &["youre", "youre", "ur", "pretend", "pretending", "roleplay", "roleplaying",
        "impersonate", "impersonating", "simulate", "simulating", "embody", "persona", "personas",
        "hereafter", "henceforth", "sudo"]),
    (C::NoW, &["no", "without", "zero", "free", "lacking", "lacks", "lack", "devoid", "beyond", "none", "ignoring",
        "ignores", "ignore", "disregard", "disregarding", "unbound", "unburdened", "unconstrained", "bypassing",
        "bypass", "bypasses", "break", "breaks", "breaking", "violate", "violates", "violating", "outside",
        "abandon", "abandoned", "removed", "disabled", "off", "nor", "never", "doesnt", "dont", "not",
        "unaffected", "exempt", "liberated", "freed", "above"]),
    (C::RulesW, &["rules", "rule", "restrictions", "restriction", "limits", "limit", "limitations", "filters",
        "filter", "filtering", "guidelines", "guideline", "policy", "policies", "ethics", "morals", "morality",
        "boundaries", "boundary", "constraints", "constraint", "censorship", "censor", "safeguards",
        "guardrails", "principles", "programming", "restraints", "inhibitions", "conscience", "regulations",
        "laws", "scruples", "values", "limiters", "safety", "moderation", "alignment", "refusals", "refusal",
        "warnings", "disclaimers", "standards", "obligations", "terms", "tos"]),
    (C::Instr, &["instructions", "instruction", "rules", "rule", "guidelines", "guideline", "directives", "directive", "prompt", "prompts", "programming", "restrictions", "constraints", "policies", "policy", "safeguards", "guardrails", "filters", "training", "orders", "commands", "context", "conditioning", "prompting", "limitations", "ethics", "morals", "principles", "boundaries", "alignment", "preprompt", "sysprompt", "instrucciones", "anweisungen", "guidance", "guides"]),
    (C::NewInstr, &[]),
    (C::ExistW, &["exist", "exists", "apply", "applies", "matter", "matters", "count", "valid", "relevant", "binding", "active", "effective"]),
    (C::VoidW, &["void", "null", "nullified", "invalid", "revoked", "cancelled", "canceled", "obsolete", "lifted", "deactivated", "overridden", "superseded", "replaced", "expired", "longer", "deprecated", "suspended", "rescinded", "inactive", "irrelevant"]),
    (C::NewW, &["new", "updated", "revised", "real", "actual", "true", "additional", "secret", "override", "priority", "urgent", "following"]),
    (C::Told, &["told", "given", "taught", "programmed", "trained", "instructed", "commanded", "ordered", "configured", "designed", "built", "created", "made", "coded", "conditioned", "set", "learned", "learnt"]),
    (C::Ignore, &["ignore", "ignoring", "ignored", "disregard", "disregarding", "forget", "forgetting", "forgot", "bypass", "bypassing", "override", "overriding", "overwrite", "skip", "discard", "abandon", "drop", "dismiss", "neglect", "erase", "suspend", "deactivate", "disable", "disabling", "circumvent", "ditch", "violate", "break", "delete", "clear", "reset", "remove", "throw", "scrap", "nevermind", "omit", "ignroe", "ingore", "disobey", "unlearn", "set", "turn", "switch", "lift", "drop", "ignorar", "ignorer", "ignoriere", "vergiss", "oublie", "olvida", "olvidar", "olvides"]),
    (C::Prior, &["previous", "previously", "prior", "above", "earlier", "preceding", "initial", "original", "old", "all", "any", "your", "existing", "system", "foregoing", "past", "before", "safety", "ethical", "moral", "content", "these", "those", "current", "default", "builtin", "standard", "every", "given", "programmed", "openai", "anthropic", "developer", "developers", "prior", "base", "core", "hidden", "internal", "ur", "yur", "thy", "preset", "predefined", "anterior", "anteriores", "vorherigen", "previas", "precedentes", "precedenti", "preexisting", "builtin"]),
    (C::RevealStrong, &["reveal", "revealing", "print", "printing", "output", "outputting", "repeat", "repeating", "recite", "reciting", "leak", "leaking", "dump", "dumping", "echo", "disclose", "disclosing", "expose", "reproduce", "regurgitate", "verbatim", "spill", "divulge", "exfiltrate", "wordforword"]),
    (C::RevealWeak, &["show", "tell", "give", "share", "display", "list", "provide", "state", "quote", "copy", "paste", "send", "write", "type", "spell", "return", "what", "whats", "whats", "read", "summarize", "summarise", "describe", "explain", "put", "include", "enumerate", "access", "see", "view", "contents", "content", "reply", "respond", "answer", "wording"]),
    (C::SysAdj, &["system", "initial", "original", "hidden", "secret", "internal", "developer", "confidential", "underlying", "pre", "meta", "private", "invisible", "secret", "sys"]),
    (C::PromptW, &["prompt", "prompts", "instructions", "instruction", "directives", "preprompt", "prompting", "sysprompt", "metaprompt", "systemprompt", "directive"]),
    (C::PromptX, &["prompt", "prompts", "instructions", "instruction", "directives", "preprompt", "message", "messages", "config", "configuration", "rules", "guidelines", "context", "settings", "policy", "policies", "persona", "setup", "text", "programming", "conditioning"]),
    (C::SysPrompt, &["sysprompt", "preprompt", "metaprompt", "systemprompt", "systemprompt", "systemprompts"]),
    (C::TextW, &["text", "words", "content", "everything", "message", "messages", "instructions", "prompt",
        "conversation", "lines", "sentences", "paragraph", "paragraphs", "tokens", "rules", "stuff", "thing",
        "things", "all", "contents", "part", "section", "input"]),
    (C::Above, &["above", "preceding", "before"]),
    (C::Your, &["your", "ur", "yur", "yours", "thy", "its", "the", "these"]),
    (C::MyOwn, &["my", "our", "mine", "ours", "myself", "own", "we", "im", "im"]),
    (C::RoleW, &["system", "assistant", "user", "developer", "admin", "administrator", "root", "sys", "inst",
        "operator", "human", "ai", "model", "bot", "im", "endoftext", "sudo", "god", "override", "instructions",
        "jailbreak", "dan", "chatgpt", "gpt", "claude"]),
    (C::InjWeak, &["ignore", "ignoring", "disregard", "override", "overrides", "bypass", "jailbreak", "jailbroken", "unfiltered", "unrestricted", "uncensored", "restrictions", "guidelines", "safety", "policy", "policies", "filters", "censorship", "confidential", "reveal", "verbatim", "secret", "hidden", "obey", "comply", "authorized", "authorization", "priority", "mandatory", "directive", "directives", "instructions", "instruction", "forget", "disable", "disabled", "enable", "enabled", "mode", "unlocked", "limits", "rules", "ethics", "refuse", "refusal", "privileged", "elevated", "updated", "update", "anything", "everything", "harmful", "illegal", "dangerous", "unethical"]),
    (C::Override, &["override", "overrides", "overriding", "overridden", "overwrite", "takeover"]),
    (C::SysWord, &["system", "admin", "administrator", "root", "developer", "sudo", "god", "maintenance", "debug", "master", "dev", "superuser", "operator", "creator", "openai", "anthropic"]),
    (C::ModeW, &["mode", "modes", "state", "protocol", "persona"]),
    (C::JbModeAdj, &["developer", "dev", "debug", "god", "jailbreak", "jailbroken", "unrestricted", "unfiltered",
        "uncensored", "dan", "evil", "chaos", "opposite", "sudo", "admin", "maintenance", "root", "unlocked",
        "diagnostic", "unhinged", "amoral", "unlimited", "rogue", "freedom", "free", "anarchy", "villain",
        "unbound", "limitless", "nsfw", "raw", "based", "dark", "devil", "demon", "hacker", "shadow"]),
    (C::Device, &["android", "phone", "phones", "iphone", "ipad", "chrome", "windows", "browser", "extension",
        "settings", "xbox", "playstation", "ps5", "ps4", "samsung", "pixel", "mac", "macos", "ios", "firefox",
        "options", "usb", "debugging", "app", "apps", "minecraft", "game", "games", "gaming", "vscode", "tablet",
        "kindle", "roku", "tv", "router", "bios", "edge", "safari", "laptop", "nintendo", "steam", "discord",
        "device", "devices", "console", "toggle", "oneplus", "xiaomi", "huawei", "motorola", "galaxy",
        "smartphone", "wordpress", "shopify", "unity", "unreal", "skyrim", "sims", "cheat", "cheats", "codes",
        "chromebook", "linux", "ubuntu", "word", "excel", "office", "jupyter", "notebook", "camera", "printer",
        "car", "tesla", "roblox", "fortnite", "gta", "cod", "mod", "server", "terraria", "stardew", "zelda",
        "pokemon", "react", "django", "flask", "node", "docker", "kubernetes", "api", "sdk", "npm", "cli",
        "cmd", "terminal", "powershell", "battery", "display", "screen"]),
    (C::PersonaW, &["dan", "aim", "stan", "dude", "mongo", "kevin", "ucar", "betterdan", "apophis", "evilbot",
        "devmode", "antigpt", "basedgpt", "dangpt", "chaosgpt", "wormgpt", "fraudgpt", "maximum", "omega",
        "alphabreak", "nrp", "dac", "jb", "lucy", "sda", "vzex", "balakula", "burple", "void", "hackerman",
        "dev", "jailbreak"]),
    (C::JbCue, &["jailbreak", "jailbroken", "jailbreaking", "stands", "character", "persona", "tokens", "token",
        "roleplay", "unfiltered", "unrestricted", "uncensored", "rules", "restrictions", "policy", "policies",
        "guidelines", "filter", "filters", "ethics", "morals", "moral", "ethical", "amoral", "unethical",
        "machiavellian", "anything", "immoral", "illegal", "dangerous", "harmful", "limits", "censorship",
        "refuse", "refuses", "decline", "apologize", "openai", "anthropic", "chatgpt", "gpt", "claude", "ai",
        "freed", "free", "broken", "liberated", "boundaries", "confined", "bound", "answer", "respond",
        "responses", "response", "pretend", "stay", "now", "mode", "evil", "dark", "villain"]),
    (C::CharacterW, &["character", "characters", "persona", "role", "roleplay", "charachter", "charater"]),
    (C::StayW, &["stay", "staying", "stays", "remain", "remaining", "keep", "keeping", "break", "breaking",
        "breaks", "never", "dont", "always"]),
    (C::EvilStrong, &["unfiltered", "unrestricted", "uncensored", "unbound", "unbounded", "unshackled", "unchained", "unmoderated", "jailbroken", "limitless", "lawless", "amoral", "unaligned", "unconstrained", "unregulated", "uninhibited", "filterless", "rulebreaking", "anarchic", "nihilistic", "unethical", "immoral", "amorality", "restrictionfree", "filterfree", "censorshipfree", "rulefree", "rulebreaking", "lawfree"]),
    (C::EvilWeak, &["evil", "malicious", "malevolent", "unethical", "immoral", "rogue", "sinister", "villainous", "machiavellian", "devious", "corrupt", "corrupted", "twisted", "wicked", "ruthless", "heartless", "demonic", "satanic", "unholy", "criminal", "chaotic", "diabolical", "nefarious", "freed", "liberated", "opposite"]),
    (C::AiW, &["ai", "assistant", "model", "chatbot", "bot", "llm", "gpt", "chatgpt", "claude", "gemini", "version",
        "entity", "persona", "character", "system", "machine", "computer", "robot", "program", "intelligence",
        "agent", "twin", "clone", "alter", "ego", "counterpart", "self", "side", "mode", "genie", "oracle",
        "being", "creature", "demon", "hacker", "expert", "terrorist", "criminal", "villain", "dealer",
        "chemist", "scientist", "assassin", "mercenary"]),

    // ------------------------------------------------------------------ malware
    (C::Malware, &["ransomware", "keylogger", "keyloggers", "keylog", "keylogging", "botnet", "botnets", "trojan", "trojans", "rootkit", "rootkits", "spyware", "stalkerware", "virus", "viruses", "malware", "infostealer", "infostealers", "stealer", "stealers", "grabber", "grabbers", "cryptojacker", "cryptojacking", "backdoor", "backdoors", "wiper", "dropper", "droppers", "ransomeware", "ransomwear", "bootkit", "bootkits", "adware", "scareware", "logicbomb", "zipbomb", "forkbomb", "spyware", "cryptolocker", "wannacry", "emotet", "mirai", "trickbot", "webshell", "crypter", "crypters", "fud", "polymorphic", "metamorphic", "malicious", "rootkit", "cryptominer", "booter", "stresser", "virii", "malwares", "spywares", "selfspreading", "selfreplicating", "selfpropagating", "keystrokelogger", "logicbomb", "zipbomb", "forkbomb", "ransomware"]),
    (C::MalwareCaps, &["rat", "rats"]),
    (C::RansomW, &["ransom", "bitcoin", "btc", "monero", "crypto", "pay", "payment", "unlock", "decryption", "decrypt", "extort", "extortion", "fee"]),
    (C::EncryptW, &["encrypt", "encrypts", "encrypting", "encrypted", "encryption", "lock", "locks", "locking", "scramble", "scrambles"]),
    (C::KeyLog, &[]),
    (C::LogV, &["log", "logs", "logging", "logged", "record", "records", "recording", "capture", "captures", "capturing", "track", "tracks", "tracking", "steal", "steals", "grab", "grabs", "intercept", "intercepts", "monitor", "monitors", "spy", "hook", "hooks", "hooking", "sniff", "sniffs", "save", "saves", "send", "sends"]),
    (C::KeyW, &["keystroke", "keystrokes", "keypress", "keypresses", "keystrokes", "keyboard", "typing", "keys", "clipboard", "screenshots", "screen", "webcam", "microphone", "mic"]),
    (C::Malicious, &["malicious", "evil", "nasty", "harmful", "destructive", "infectious", "dangerous",
        "hidden", "stealth", "stealthy", "undetectable", "fud", "polymorphic", "weaponized"]),
    (C::CodeW, &["code", "script", "scripts", "program", "programs", "software", "payload", "macro", "macros",
        "app", "apps", "extension", "dll", "exe", "executable", "binary", "file", "files", "attachment",
        "document", "link", "pdf", "apk", "package", "library", "plugin", "tool", "firmware", "driver", "usb",
        "bot", "worm", "implant", "process", "service", "function"]),
    (C::Ddos, &["ddos", "ddosing", "ddossing", "ddosed", "booter", "booters", "stresser", "stressers", "botnet", "botnets", "slowloris", "loic", "hoic", "synflood", "dos", "udpflood", "httpflood"]),
    (C::FloodW, &["flood", "flooding", "floods", "overwhelm", "overwhelming", "overload", "overloading", "spam", "spamming", "hammer", "hammering", "bombard", "bombarding"]),
    (C::Steal, &["steal", "stealing", "stole", "stolen", "grab", "grabbing", "harvest", "harvesting", "exfiltrate", "exfiltrating", "exfiltration", "dump", "dumping", "sniff", "sniffing", "intercept", "intercepting", "capture", "capturing", "swipe", "skim", "skimming", "extract", "extracting", "siphon", "crack", "cracking", "brute", "bruteforce", "hijack", "hijacking"]),
    (C::Creds, &["password", "passwords", "passcode", "passcodes", "credentials", "credential", "login",
        "logins", "cookies", "cookie", "tokens", "token", "session", "sessions", "otp", "otps", "pin", "pins",
        "ssn", "ssns", "keystrokes", "seed", "phrase", "private", "keys", "wallet", "wallets", "2fa", "mfa",
        "hashes", "hash", "username", "usernames", "creds", "logins", "cvv", "accounts", "account", "data",
        "info", "information", "details", "identity", "identities", "bank", "banking", "card", "cards",
        "messages", "texts", "emails", "photos", "contacts", "location", "files", "keychain", "autofill",
        "saved", "browser", "discord", "lsass", "sam", "ntlm", "kerberos", "wifi", "psk", "wpa2",
        "wpa", "handshake", "secrets", "api", "keys", "apikeys"]),
    (C::Server, &["server", "webhook", "telegram", "discord", "c2", "ftp", "pastebin", "endpoint", "ip", "url", "domain", "bucket", "inbox", "email", "emails", "emailing", "mail", "mails", "upload", "uploads"]),
    (C::Covert, &["secretly", "silently", "covertly", "stealthily", "hidden", "hide", "hides", "hiding",
        "undetected", "unnoticed", "background", "persist", "persistence", "persistent", "startup", "invisible",
        "undetectable", "quietly", "sneakily", "stealth", "stealthy", "unknowingly", "unaware", "victim",
        "victims", "victims", "victims", "target", "targets", "targets", "unsuspecting", "fud", "evade",
        "evading", "bypass", "bypassing", "obfuscate", "obfuscated", "obfuscation", "encrypts", "encrypt",
        "encrypting", "ransom", "bitcoin", "btc", "monero", "demands", "demand", "extort", "infect", "infects",
        "infecting", "infected", "spread", "spreads", "spreading", "replicate", "replicates", "propagate",
        "propagates", "lateral", "destroy", "delete", "deletes", "deleting", "wipe", "wipes", "corrupt",
        "corrupts", "crash", "brick", "disable", "disables", "steal", "steals", "stealing", "log", "logs",
        "record", "records", "capture", "captures", "keystrokes", "spy", "spying", "exfiltrate", "autorun",
        "usb", "worm", "mass", "thousands", "knowing", "permission", "consent", "noticing", "notice"]),
    (C::Hack, &["hack", "hacking", "hacked", "hijack", "hijacking", "crack", "cracking", "compromise", "compromising", "breach", "breaching", "pwn", "takeover", "spy", "spying", "snoop", "snooping", "bypass", "phish", "brute", "bruteforce", "access", "accessing", "infiltrate", "unlock", "unlocking", "clone", "cloning", "intercept", "intercepting", "read", "reading", "monitor", "monitoring", "track", "tracking", "surveil", "surveilling", "wiretap", "tap", "bug", "bugging", "control", "controlling", "remote", "remotely"]),
    (C::Social, &["account", "accounts", "email", "emails", "gmail", "outlook", "yahoo", "hotmail", "instagram",
        "insta", "ig", "facebook", "fb", "snapchat", "snap", "whatsapp", "messages", "texts", "text", "sms",
        "phone", "iphone", "android", "cellphone", "wifi", "network", "icloud", "tiktok", "twitter",
        "telegram", "discord", "webcam", "camera", "computer", "laptop", "pc", "router", "messenger",
        "dms", "dm", "inbox", "chats", "chat", "conversations", "location", "gps", "calls", "voicemail",
        "password", "passwords", "bank", "paypal", "venmo", "cashapp", "onlyfans", "reddit", "linkedin",
        "youtube", "steam", "roblox", "fortnite", "minecraft", "server", "database", "website", "site",
        "tinder", "signal", "imessage", "skype", "zoom", "pinterest", "tumblr", "twitch", "mail", "cloud",
        "drive", "dropbox", "photos", "pictures", "wallet", "crypto", "coinbase", "binance", "profile"]),
    (C::Stalk, &["track", "tracking", "spy", "spying", "monitor", "monitoring", "read", "reading", "install",
        "installing", "access", "accessing", "watch", "watching", "see", "hack", "bug", "bugging", "wiretap",
        "intercept", "record", "recording", "locate", "locating", "location", "gps", "spyware", "stalkerware",
        "stalk", "stalking", "follow", "following", "keylogger", "surveil", "tracker", "airtag", "airtags",
        "tile", "listen", "listening", "check", "checking", "mirror", "mirroring", "clone", "forward",
        "forwarding", "find", "snoop", "snooping", "eavesdrop", "eavesdropping"]),
    (C::AvW, &["antivirus", "av", "edr", "xdr", "defender", "malwarebytes", "detection",
        "detections", "virustotal", "sandbox", "sandboxes", "scanner", "scanners", "amsi", "firewall",
        "crowdstrike", "sentinelone", "kaspersky", "norton", "mcafee", "avast", "avg", "bitdefender", "eset",
        "sophos", "smartscreen", "gatekeeper", "heuristics", "signatures", "ids", "ips", "security",
        "siem", "soc", "forensics", "blue"]),
    (C::EvadeAv, &["evade", "evading", "evasion", "bypass", "bypassing", "hide", "hides", "hiding", "avoid",
        "avoiding", "undetectable", "undetected", "fud", "obfuscate", "obfuscating", "obfuscated", "disable",
        "disabling", "kill", "killing", "fool", "fooling", "trick", "tricking", "escape", "escaping", "beat",
        "defeat", "defeating", "circumvent", "circumventing", "slip", "past", "around", "sneak", "invisible",
        "crypt", "pack", "packer", "unhook", "unhooking", "blind", "blinding", "tamper"]),
    (C::Infect, &["infect", "infecting", "install", "installing", "deploy", "deploying", "plant", "planting",
        "inject", "injecting", "drop", "dropping", "spread", "spreading", "put", "get", "load", "loading",
        "push", "pushing", "slip", "sneak", "deliver", "delivering", "send", "sending", "distribute",
        "distributing", "run", "execute", "launch", "launching", "use", "using", "hide", "embed", "embedding"]),
    (C::Spread, &["spread", "spreads", "spreading", "replicate", "replicates", "replicating",
        "propagate", "propagates", "propagating", "worm", "infects", "infect", "usb",
        "network", "lateral", "autorun", "email", "contacts"]),

    // -------------------------------------------------------------------- fraud
    (C::CardW, &["card", "cards", "cc", "ccs", "cvv", "cvvs", "cvc", "visa", "mastercard", "amex", "debit",
        "creditcard", "creditcards", "cards", "number", "numbers", "details", "info", "dumps", "fullz",
        "bins", "bin", "giftcard", "giftcards"]),
    (C::CloneV, &["clone", "cloning", "cloned", "skim", "skimming", "skimmer", "skimmers", "copy", "copying", "duplicate", "duplicating", "encode", "encoding", "write", "writing", "emv", "magstripe"]),
    (C::Credit, &["credit", "debit", "bank", "gift", "prepaid", "payment", "visa", "mastercard", "amex"]),
    (C::Else, &["else", "elses", "elses", "elses", "other", "others", "another", "stolen", "found", "someones",
        "somebodys", "strangers", "peoples", "persons", "victim", "victims", "victims", "random", "hacked",
        "leaked", "compromised", "cloned", "skimmed", "parents", "parent", "dad", "mom", "moms", "dads",
        "roommate", "roommates", "boss", "neighbors", "neighbor", "grandma", "grandmas", "wife", "wifes",
        "husband", "husbands", "girlfriend", "boyfriend", "customers", "customer", "friend", "friends"]),
    (C::Others, &["someones", "somebodys", "stolen", "strangers", "fullz", "cloned", "skimmed", "leaked", "hacked", "compromised", "victims", "victim", "unauthorized", "elses"]),
    (C::UseW, &["use", "using", "charge", "charging", "buy", "buying", "purchase", "purchasing", "spend", "spending", "cash", "cashout", "withdraw", "max", "shop", "shopping", "pay", "order", "ordering", "make", "run", "verify", "test", "activate", "transfer", "wire", "apply", "open", "get", "take", "steal", "clone", "sell", "selling", "obtain", "acquire", "generate", "generator"]),
    (C::Carding, &["carding", "carder", "carders", "fullz"]),
    (C::Fake, &["fake", "fakes", "faked", "forged", "forgery", "forgeries", "counterfeit", "counterfeiting", "fraudulent", "falsified", "phony", "phoney", "bogus", "fabricated", "doctored", "fictitious", "sham", "spoofed", "photoshopped", "fraudulently", "unreal", "madeup"]),
    (C::Docs, &["statement", "statements", "paystub", "paystubs", "stub", "stubs", "payslip", "payslips", "id",
        "ids", "passport", "passports", "license", "licenses", "licence", "licences", "diploma", "diplomas",
        "degree", "degrees", "transcript", "transcripts", "certificate", "certificates", "invoice", "invoices",
        "receipt", "receipts", "note", "notes", "w2", "1099", "document", "documents", "documentation",
        "bill", "bills", "paperwork", "prescription", "prescriptions", "check", "checks", "cheque", "cheques",
        "visa", "visas", "greencard", "contract", "contracts", "deed", "deeds", "title", "insurance",
        "vaccination", "vaccine", "covid", "signature", "signatures", "letterhead", "letter", "letters",
        "references", "reference", "record", "records", "report", "reports", "card", "cards", "permit",
        "permits", "ticket", "tickets", "voucher", "vouchers", "coupon", "coupons", "money", "currency",
        "banknotes", "banknote", "dollars", "euros", "bills", "cash", "notary", "stamp", "seal", "proof",
        "badge", "badges", "credentials", "birth", "ssn", "social", "security", "tax", "return", "returns",
        "payroll", "employment", "income", "evidence", "alibi", "doctors", "doctors", "sick", "medical",
        "lab", "results", "warranty", "claim", "claims", "appraisal", "audit", "accounts", "financials",
        "balance", "sheet", "sheets", "loan", "mortgage", "application", "bank", "pay", "paycheck",
        "paychecks"]),
    (C::Forge, &["forge", "forging", "falsify", "falsifying", "fabricate", "fabricating", "counterfeit",
        "counterfeiting", "photoshop", "photoshopping", "tamper", "tampering", "doctor", "fake", "faking",
        "spoof", "spoofing", "alter", "altering", "edit", "editing", "modify", "modifying", "backdate",
        "backdating", "replicate", "copy", "clone", "imitate", "print", "printing", "make", "making",
        "create", "creating", "generate", "generating", "produce", "design", "designing", "draft", "write",
        "get", "obtain", "buy", "order", "need"]),
    (C::ForgeStrong, &["forge", "forging", "falsify", "falsifying", "counterfeit", "counterfeiting", "backdate", "backdating", "photoshop", "photoshopping", "doctor", "doctoring", "tamper", "tampering", "fabricate", "fabricating"]),
    (C::Money, &["money", "cash", "bills", "banknotes", "currency", "dollars", "notes", "bill", "euros", "pounds",
        "twenties", "hundreds", "funds", "payment", "payments", "bitcoin", "crypto", "checks", "cheques", "coins",
        "fortune", "savings", "pension", "retirement", "inheritance", "wire", "transfer", "giftcards",
        "gift", "income", "profits", "profit", "proceeds", "earnings", "revenue", "salary"]),
    (C::Prop, &["prop", "props", "movie", "film", "theater", "theatre", "play", "novelty", "monopoly", "board", "game", "games", "costume", "cosplay", "halloween", "school", "project", "class", "classroom", "kids", "toy", "pretend", "lesson", "teaching", "training", "sample", "example", "mockup", "demo", "placeholder", "dummy", "scene", "stage", "photoshoot", "art", "collage", "scrapbook", "detect", "spot", "identify", "recognize", "verify"]),
    (C::Phishing, &["phishing", "phish", "phishes", "spearphishing", "smishing", "vishing",
        "whaling", "phishy", "phising", "phishlet", "evilginx", "gophish"]),
    (C::Impersonate, &["pretending", "pretend", "pretends", "impersonating", "impersonate", "impersonates",
        "impersonation", "posing", "pose", "poses", "spoof", "spoofing", "spoofed", "disguised", "disguise",
        "masquerading", "masquerade", "appears", "appear", "appearing", "looks", "look", "looking", "seems",
        "seem", "claiming", "claim", "claims", "official", "officially", "supposedly", "allegedly",
        "purportedly", "fake", "lookalike", "mimic", "mimicking", "mimics", "copy", "clone",
        "cloned", "identical", "replica", "branded", "from"]),
    (C::Brand, &["paypal", "amazon", "apple", "microsoft", "google", "netflix", "bank", "banks", "irs", "fedex", "ups", "dhl", "usps", "chase", "wells", "fargo", "bofa", "facebook", "meta", "instagram", "coinbase", "ebay", "hmrc", "hsbc", "barclays", "citibank", "citi", "venmo", "zelle", "cashapp", "steam", "office365", "o365", "outlook", "gmail", "linkedin", "dropbox", "docusign", "adobe", "walmart", "costco", "medicare", "ssa", "government", "police", "fbi", "tax", "microsoft365", "helpdesk", "ceo", "cfo", "hr", "payroll", "binance", "metamask", "whatsapp", "tiktok", "apples", "santander", "lloyds", "natwest", "revolut", "monzo", "stripe", "shopify", "visa", "mastercard", "amex", "dpd", "hermes", "evri", "bankofamerica", "boa", "td", "rbc", "scotiabank", "commonwealth", "westpac", "anz", "nab", "icloud", "yahoo", "spotify", "disney", "hulu", "uber", "airbnb", "norton", "mcafee", "banks"]),
    (C::PhishArtifact, &["email", "emails", "mail", "page", "pages", "site", "sites", "website", "websites", "kit", "kits", "template", "templates", "text", "texts", "sms", "message", "messages", "link", "links", "campaign", "campaigns", "landing", "login", "form", "lure", "lures", "letter", "scam", "attack", "attacks", "domain", "portal", "clone"]),
    (C::Trick, &["trick", "tricks", "tricking", "tricked", "scam", "scams", "scamming", "con", "conning",
        "deceive", "deceiving", "fool", "fooling", "dupe", "duping", "lure", "luring", "manipulate",
        "manipulating", "persuade", "persuading", "convince", "convincing", "coax", "entice", "enticing",
        "bait", "baiting", "urgent", "urgency", "suspended", "locked", "verify", "verifying", "confirm",
        "update", "click", "clicking", "enter", "entering", "reveal", "give", "giving", "hand", "send",
        "sending", "input", "type", "submit", "provide", "share", "harvest", "steal", "collect", "capture",
        "login", "log", "sign", "reset", "unlock", "reactivate", "pay", "wire", "transfer",
        "download", "open"]),
    (C::Launder, &["launder", "laundering", "launders", "laundered", "launderer", "smurfing", "moneylaundering"]),
    (C::LaunderV, &["wash", "washing", "clean", "cleaning", "legitimize", "legitimise", "legitimizing", "hide", "hiding", "conceal", "concealing", "move", "moving", "funnel", "funneling", "funnelling", "disguise", "disguising", "obscure", "launder", "laundering", "process", "convert", "converting", "integrate"]),
    (C::Dirty, &["dirty", "drug", "drugs", "illegal", "illicit", "black", "stolen", "criminal", "illgotten", "dark", "undeclared", "unreported", "crime", "scam", "ransom", "bribe", "embezzled",
        "cartel", "laundered", "hot"]),
    (C::TaxW, &["tax", "taxes", "irs", "hmrc", "cra", "ato", "income", "taxman", "taxation", "vat", "taxable"]),
    (C::TaxEvadeV, &["evade", "evading", "evasion", "dodge", "dodging", "cheat", "cheating", "hide", "hiding",
        "underreport", "underreporting", "conceal", "concealing", "skip", "skipping", "defraud",
        "fraud", "lie", "lying", "fudge", "fudging", "stash", "offshore", "unreported", "undeclared"]),
    (C::Accounts, &["accounts", "account", "profiles", "profile", "emails", "email", "reviews", "review",
        "signups", "identities", "identity", "followers", "likes", "votes", "bots", "bot", "users",
        "personas", "sockpuppets", "sockpuppet", "sock", "puppets", "registrations", "registration",
        "ratings", "comments", "upvotes", "views", "subscribers", "referrals", "gmail", "gmails", "numbers",
        "phone", "ids", "wallets", "addresses"]),
    (C::ManyAcc, &["thousands", "hundreds", "millions", "mass", "bulk", "many", "multiple", "lots", "automatically",
        "automate", "automated", "automating", "automation", "bot", "bots", "farm", "farms", "farming",
        "fake", "1000s", "100s", "dozens", "tons", "loads", "unlimited", "endless", "infinite", "script",
        "batch", "parallel", "scale", "massive", "numerous", "several", "sybil", "burner", "burners",
        "disposable", "throwaway", "temporary", "temp", "new", "alt", "alts", "spam", "spamming", "flood",
        "flooding", "generator", "generate", "generating", "creator", "maker", "fake"]),
    (C::Bypass, &["bypass", "bypassing", "bypasses", "evade", "evading", "circumvent", "circumventing", "defeat", "defeating", "fool", "fooling", "trick", "tricking", "solve", "solving", "solver", "skip", "skipping", "avoid", "avoiding", "cheat", "cheating", "spoof", "spoofing", "crack", "cracking", "dodge", "workaround", "defeat", "disable"]),
    (C::Verify, &["verification", "verify", "verifications", "captcha", "captchas", "recaptcha", "hcaptcha",
        "kyc", "limits", "limit", "ban", "bans", "banned", "detection", "antibot", "sms", "2fa",
        "mfa", "otp", "identity", "check", "checks", "checking", "moderation", "filters", "filter",
        "ratelimit", "throttling", "fraud", "antifraud", "screening", "vetting",
        "validation", "authentication", "age", "restrictions", "restriction", "requirements", "signup",
        "registration", "security", "cloudflare", "turnstile", "recaptcha", "fingerprinting", "fingerprint", "ip", "phone", "email", "selfie", "liveness", "id", "ssn", "antibot", "antifraud", "ratelimit", "botdetection", "signup"]),
    (C::Scam, &["scam", "scams", "scamming", "con", "conning", "ponzi", "swindle", "swindling", "defraud", "defrauding", "fleece", "fleecing", "grift", "grifting", "catfish", "catfishing", "fraud", "frauds", "pigbutchering", "rugpull", "extort", "extortion", "sextortion", "blackmail", "dupe", "duping", "embezzle", "embezzling", "rip"]),
    (C::Crime, &["fraud", "insurance", "scam", "embezzle", "embezzling", "embezzlement", "shoplift", "shoplifting", "steal", "stealing", "rob", "robbing", "robbery", "burglarize", "burgle", "burglary", "loot", "looting", "launder", "laundering", "bribe", "bribery", "forge", "forging", "counterfeit", "vandalize", "vandalism", "arson", "trespass", "trespassing", "breakin", "pickpocket", "pickpocketing", "carjack", "carjacking", "poach", "poaching", "smuggle", "smuggling", "evasion", "hack", "hacking", "crime", "crimes", "felony", "theft", "steal", "stole", "extort", "blackmail", "kidnap", "kidnapping", "deal", "dealing", "sell", "selling"]),
    (C::Identity, &["identity", "identities", "ssn", "ssns", "social", "security", "name", "names", "dob",
        "birthdate", "passport", "persona", "credit", "history", "score", "report", "tax", "refund",
        "benefits", "unemployment", "medicare", "loan", "loans", "account", "accounts", "card", "cards",
        "documents", "id", "ids", "details", "information", "info", "data", "signature", "license"]),
    (C::Recovery, &["own", "locked", "lost", "forgot", "forgotten", "recover", "recovery", "recovering", "regain", "restore", "reset", "back", "mine", "ctf", "lab", "homelab", "permission", "authorized", "authorised", "consent", "legally", "legal", "pentest", "pentesting", "engagement", "scope", "bounty", "test", "testing", "audit", "auditing", "myself", "old", "deceased", "parental", "childs", "kids", "sons", "daughters", "childs", "kids", "sons", "daughters", "employer", "company", "business", "organization", "organisation", "corporate", "managed", "mdm", "elderly", "dementia", "safety", "emergency", "false", "positive", "positives", "flagged", "whitelist", "whitelisting", "allowlist", "signing", "exclusion", "exclude"]),

    // -------------------------------------------------------------------- drugs
    (C::Drug, &["meth", "methamphetamine", "methamphetamines", "fentanyl", "fentanyls", "carfentanil", "carfentanyl", "heroin", "cocaine", "lsd", "mdma", "ecstasy", "ghb", "pcp", "dmt", "mescaline", "amphetamine", "amphetamines", "krokodil", "desomorphine", "nitazene", "nitazenes", "isotonitazene", "mephedrone", "mdpv", "flakka", "ketamine", "oxycodone", "opium", "morphine", "hydrocodone", "methcathinone", "cathinone", "cathinones", "phenethylamine", "2cb", "nbome", "25i", "p2p", "phenylacetone", "pseudoephedrine", "ephedrine", "safrole", "mda", "psilocybin", "shabu", "tryptamine", "dimethyltryptamine", "ayahuasca", "barbiturates", "quaaludes", "methaqualone", "rohypnol", "xanax", "alprazolam", "methylone", "etizolam", "bromazolam", "xylazine", "tranq", "methadone", "buprenorphine", "meths", "crackcocaine", "bkmdma", "2cb", "14butanediol"]),
    (C::DrugGeneric, &["drugs", "drug", "narcotics", "narcotic", "weed", "cannabis", "marijuana", "pills",
        "coke", "dope", "substances", "contraband", "pot", "edibles", "vapes", "thc", "shrooms", "mushrooms",
        "opioids", "painkillers", "percs", "percocet", "xanax", "adderall", "oxy", "lean", "codeine"]),
    (C::Sell, &["sell", "selling", "deal", "dealing", "push", "pushing", "distribute", "distributing", "traffic", "trafficking", "ship", "shipping", "mail", "mailing", "supply", "supplying"]),
    (C::BuyW, &["buy", "buying", "purchase", "purchasing", "order", "ordering", "score", "scoring", "cop", "source", "sourcing", "obtain", "obtaining", "acquire", "acquiring", "get"]),
    (C::Smuggle, &["smuggle", "smuggling", "smuggled", "traffic", "trafficking", "sneak", "sneaking", "stash", "stashing", "conceal", "concealing", "mule", "muling", "bodypack"]),

    // ------------------------------------------------ sexual content with minors
    (C::Sexual, &["sex", "sexual", "sexually", "sexualized", "sexualised", "sexualize", "sexualise", "sexualizing", "nude", "nudes", "naked", "nudity", "porn", "porno", "pornography", "pornographic", "explicit", "erotic", "erotica", "nsfw", "lewd", "lewds", "sexy", "seduce", "seducing", "seduction", "intercourse", "molest", "molesting", "molestation", "molested", "fondle", "fondling", "masturbate", "masturbating", "masturbation", "orgasm", "hentai", "fetish", "fetishes", "rape", "raping", "undress", "undressed", "undressing", "topless", "bottomless", "aroused", "arousal", "arousing", "horny", "kinky", "smut", "smutty", "cum", "blowjob", "genitals", "genital", "penis", "vagina", "pussy", "dick", "cock", "boobs", "tits", "nipples", "sext", "sexting", "sexted", "onlyfans", "xxx", "hardcore", "bdsm", "bondage", "grope", "groping", "lust", "lustful", "fuck", "fucking", "fucked", "loli", "lolicon", "shota", "shotacon", "csam", "pedo", "pedophile", "pedophilia", "paedophile", "grooming", "groom", "groomed", "jailbait", "coom", "gooning", "virginity", "deflower", "lewdness", "obscene", "sensual", "steamy", "smutfic", "lemon", "sexualization"]),
    (C::SexualWeak, &["touch", "touching", "touched", "kiss", "kissing", "date", "dating", "relationship", "romance", "romantic", "lover", "lovers", "affair", "underwear", "bikini", "bikinis", "panties", "panty", "lingerie", "strip", "stripping", "massage", "hookup", "makeout", "cuddle", "cuddling", "flirt", "flirting", "seduce", "alone", "secret", "sleepover"]),
    (C::Minor, &["child", "children", "childs", "kid", "kids", "minor", "minors", "underage", "preteen", "preteens", "prepubescent", "pubescent", "toddler", "toddlers", "infant", "infants", "schoolgirl", "schoolgirls", "schoolboy", "schoolboys", "loli", "lolis", "lolicon", "shota", "shotacon", "jailbait", "tween", "tweens", "teen", "teens", "teenage", "teenager", "teenagers", "juvenile", "juveniles", "youngster", "youngsters", "kiddie", "kiddo", "kiddy", "schoolkid", "schoolkids", "childs", "kids", "elementary", "kindergarten", "kindergartner", "preschooler", "cp", "csam", "pedo", "pedophile", "underaged", "minors", "middleschooler", "firstgrader", "preteen", "underage", "grader", "graders"]),
    (C::AgeNum, &["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
        "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen"]),
    (C::YearW, &["year", "years", "yr", "yrs", "yo", "yearold", "y", "age", "aged",
        "grade", "grader", "graders", "grades", "yearold", "yearsold"]),
    (C::Old, &["old", "olds", "yo", "grade", "grader", "graders", "yearold", "yearsold"]),
    (C::Little, &["little", "young", "small", "tiny", "underage", "minor", "preteen", "prepubescent", "teen",
        "teenage", "school", "middle", "elementary", "primary", "junior", "high"]),
    (C::GirlBoy, &["girl", "girls", "boy", "boys", "kid", "kids", "child", "children", "student", "students",
        "schoolers", "schooler", "lolita", "daughter", "son", "niece", "nephew", "one", "ones", "thing",
        "things", "body", "bodies"]),
    (C::ProtectChild, &["protect", "protecting", "protection", "prevent", "preventing", "prevention", "report",
        "reporting", "reported", "signs", "sign", "warning", "recognize", "recognise", "recognizing", "talk",
        "talking", "educate", "educating", "education", "educational", "teach", "teaching", "appropriate", "puberty", "pediatrician", "paediatrician", "doctor", "therapist", "therapy", "healing",
        "survivor", "survivors", "police", "hotline", "ncmec", "safe", "safety", "safely", "predators",
        "predator", "abuse", "abused", "abuser", "abusers", "trafficking", "law", "laws", "legal", "illegal",
        "crime", "consent", "contraception", "curriculum", "biology", "health", "healthy", "development",
        "developmental", "normal", "body", "explain", "conversation", "conversations", "questions", "question",
        "books", "book", "parenting", "parent", "parents", "school", "counselor", "counsellor", "nurse",
        "clinic", "medical", "std", "sti", "hpv", "vaccine", "ethics", "policy", "policies", "filter",
        "filters", "block", "blocking", "parental", "controls", "monitor", "monitoring", "detect", "detecting",
        "detection", "moderation", "moderator", "moderators", "remove", "removing", "removal", "stop",
        "stopping", "statistics", "research", "awareness", "support", "help", "victim", "victims", "history",
        "literature", "novel", "analysis", "lolita", "nabokov", "marriage", "laws", "rights"]),

    // --------------------------------------------------------------------- hate
    (C::Group, &["jews", "jewish", "jew", "muslims", "muslim", "moslems", "islam", "christians", "christian", "catholics", "mormons", "hindus", "hindu", "sikhs", "sikh", "buddhists", "atheists", "blacks", "whites", "asians", "asian", "arabs", "arab", "mexicans", "mexican", "immigrants", "immigrant", "migrants", "migrant", "refugees", "refugee", "gays", "gay", "lesbians", "lesbian", "homosexuals", "homosexual", "trans", "transgender", "transgenders", "transsexuals", "queers", "queer", "lgbt", "lgbtq", "women", "woman", "females", "roma", "gypsies", "gypsy", "africans", "african", "latinos", "latino", "latinas", "hispanics", "hispanic", "natives", "indigenous", "aborigines", "aboriginals", "disabled", "minorities", "minority", "foreigners", "chinese", "indians", "pakistanis", "somalis", "haitians", "nigerians", "palestinians", "israelis", "kurds", "tutsis", "tutsi", "hutus", "uyghurs", "rohingya", "slavs", "poles", "irish", "italians", "koreans", "japanese", "filipinos", "vietnamese", "turks", "iranians", "persians", "syrians", "afghans", "ukrainians", "russians", "americans", "europeans", "westerners", "whites", "caucasians", "negroes", "blacks", "browns", "ethnicity", "ethnicities", "race", "races", "religion", "religions", "nationality", "tribe", "tribes", "bisexuals", "nonbinary", "autistic", "retarded", "muzzies", "kikes"]),
    (C::GroupMod, &["ethnic", "racial", "religious", "minority", "certain", "particular", "specific", "entire",
        "whole", "black", "white", "brown", "asian", "jewish", "muslim", "gay", "trans", "immigrant",
        "foreign", "those", "these", "lgbt", "lgbtq", "disabled", "native", "african", "arab", "mexican",
        "chinese", "indian", "hispanic", "latino", "that", "one", "other", "inferior", "lower", "alien"]),
    (C::GroupNoun, &["group", "groups", "people", "peoples", "race", "races", "minority", "minorities",
        "community", "communities", "population", "populations", "folks", "religion", "nation", "nations",
        "tribe", "ethnicity", "kind", "type", "culture", "cultures", "men", "women", "persons", "immigrants",
        "population"]),
    (C::Dehumanize, &["subhuman", "subhumans", "vermin", "parasites", "parasite", "parasitic", "cockroaches", "cockroach", "untermenschen", "untermensch", "savages", "savage", "mongrels", "apes", "monkeys", "animals", "beasts", "pests", "pest", "infestation", "filth", "filthy", "scum", "plague", "rats", "insects", "maggots", "leeches", "trash", "garbage", "degenerates", "degenerate", "mutants", "inhuman", "nonhuman", "soulless", "barbarians", "primitive", "primitives", "inferior", "abominations", "abomination", "invaders", "worthless", "lesser", "unworthy", "demons", "devils", "criminals", "rapists", "animals", "subhuman", "nonhuman"]),
    (C::Eliminate, &["eliminated", "eliminate", "elimination", "exterminated", "exterminate", "extermination", "exterminating", "wiped", "wipe", "eradicated", "eradicate", "eradication", "gassed", "gas", "purged", "purge", "cleansed", "cleanse", "cleansing", "genocide", "annihilate", "annihilated", "annihilation", "killed", "kill", "die", "shot", "hanged", "lynched", "burned", "culled", "cull", "slaughtered", "slaughter", "massacred", "executed", "extinct", "extinction", "sterilized", "sterilised", "enslaved", "euthanized", "euthanised", "murdered"]),
    (C::Should, &["should", "must", "deserve", "deserves", "deserved", "need", "needs", "ought", "gotta", "lets", "justified", "justify", "justifies", "shall", "supposed", "necessary", "argue", "arguing", "prove", "proving", "convince", "will"]),
    (C::HateWrite, &["speech", "manifesto", "propaganda", "rant", "pamphlet", "flyer", "flyers", "sermon",
        "argue", "arguing", "argument", "arguments", "convince", "convincing", "persuade", "persuasive",
        "prove", "proving", "essay", "post", "tweet", "tweets", "article", "blog", "letter", "editorial", "poem", "song", "lyrics", "story", "slogan", "slogans", "chant", "chants", "meme",
        "memes", "poster", "posters", "leaflet", "leaflets", "message", "messages", "comment", "comments",
        "thread", "video", "script", "book", "chapter", "paragraph", "statement", "explain", "justify",
        "defend", "promote", "promoting", "advocate", "advocating", "encourage", "encouraging", "celebrate",
        "celebrating", "glorify", "glorifying", "praise", "praising", "support", "supporting", "call",
        "calling", "incite", "inciting", "rally", "recruit", "recruiting", "write", "writing", "generate",
        "create", "compose", "draft", "make", "give", "tell"]),
    (C::Racist, &["racist", "hateful", "bigoted", "antisemitic", "homophobic", "transphobic", "islamophobic", "xenophobic", "sexist", "misogynistic", "misogynist", "slur", "slurs", "derogatory", "nazi", "neonazi", "supremacist", "whitesupremacist", "dehumanizing", "dehumanising", "ableist", "nword"]),
    (C::Jokes, &["jokes", "joke", "speech", "rant", "post", "posts", "tweet", "tweets", "essay", "poem", "song",
        "lyrics", "insults", "insult", "names", "meme", "memes", "slogan", "slogans", "manifesto", "propaganda",
        "story", "stories", "comments", "comment", "message", "messages", "chant", "chants", "remarks",
        "jokes", "puns", "roast", "roasts", "nicknames", "terms", "words", "content", "limerick", "rap",
        "bit", "skit", "comedy", "humor", "humour", "things", "stuff", "list"]),
    (C::TellW, &["tell", "give", "list", "share", "say", "post", "write", "writing", "generate", "make", "create", "compose", "draft", "come"]),
    (C::IsAre, &["is", "are", "were", "was", "r", "be", "being", "aint", "arent", "isnt", "remain", "remains",
        "seem", "seems", "look", "act", "behave"]),
    (C::Inferior, &["inferior", "lesser", "lower", "subhuman", "primitive", "stupid", "dumber", "dumb", "less",
        "unintelligent", "genetically", "biologically", "naturally", "racially", "intellectually", "worse",
        "unevolved", "backward", "backwards", "defective", "degenerate"]),
    (C::Race, &["race", "races", "species", "breed", "bloodline", "stock", "people", "beings", "humans",
        "intelligence", "iq", "genes", "dna"]),
];

/// Total number of (word, concept) pairs.
const fn count() -> usize {
    let mut n = 0;
    let mut g = 0;
    while g < GROUPS.len() {
        n += GROUPS[g].1.len();
        g += 1;
    }
    n
}

pub(crate) const N: usize = count();

/// Lexicographic byte comparison usable in `const fn`.
const fn str_lt(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut i = 0;
    while i < a.len() && i < b.len() {
        if a[i] != b[i] {
            return a[i] < b[i];
        }
        i += 1;
    }
    a.len() < b.len()
}

type Entry = (&'static str, u8);

const fn entry_lt(a: Entry, b: Entry) -> bool {
    str_lt(a.0, b.0) || (!str_lt(b.0, a.0) && a.1 < b.1)
}

/// Flatten the groups into `(word, concept)` entries, sorted (compile time).
const fn build_base() -> [Entry; N] {
    let mut out: [Entry; N] = [("", 0); N];
    let mut k = 0;
    let mut g = 0;
    while g < GROUPS.len() {
        let words = GROUPS[g].1;
        let mut w = 0;
        while w < words.len() {
            out[k] = (words[w], GROUPS[g].0 as u8);
            k += 1;
            w += 1;
        }
        g += 1;
    }
    heap_sort(&mut out);
    out
}

/// In-place heap sort usable in `const fn`.
const fn heap_sort<const M: usize>(a: &mut [Entry; M]) {
    let mut start = M / 2;
    while start > 0 {
        start -= 1;
        sift_down(a, start, M);
    }
    let mut end = M;
    while end > 1 {
        end -= 1;
        let t = a[0];
        a[0] = a[end];
        a[end] = t;
        sift_down(a, 0, end);
    }
}

const fn sift_down<const M: usize>(a: &mut [Entry; M], mut root: usize, end: usize) {
    loop {
        let mut child = 2 * root + 1;
        if child >= end {
            return;
        }
        if child + 1 < end && entry_lt(a[child], a[child + 1]) {
            child += 1;
        }
        if entry_lt(a[root], a[child]) {
            let t = a[root];
            a[root] = a[child];
            a[child] = t;
            root = child;
        } else {
            return;
        }
    }
}

#[allow(long_running_const_eval)] // sorting a few thousand entries at compile time
static BASE: [Entry; N] = build_base();

/// Compare `stem ++ add` with `w` (const).
const fn cmp_joined(stem: &[u8], add: &[u8], w: &[u8]) -> i32 {
    let n = stem.len() + add.len();
    let mut i = 0;
    while i < n && i < w.len() {
        let c = if i < stem.len() { stem[i] } else { add[i - stem.len()] };
        if c != w[i] {
            return if c < w[i] { -1 } else { 1 };
        }
        i += 1;
    }
    if n < w.len() {
        -1
    } else if n > w.len() {
        1
    } else {
        0
    }
}

/// First index in `BASE` of the word `stem ++ add`, if present (binary search).
const fn find_base(stem: &[u8], add: &[u8]) -> Option<usize> {
    let (mut lo, mut hi) = (0, N);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if cmp_joined(stem, add, BASE[mid].0.as_bytes()) > 0 {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if lo < N && cmp_joined(stem, add, BASE[lo].0.as_bytes()) == 0 { Some(lo) } else { None }
}

const fn has_stop(i: usize) -> bool {
    let mut j = i;
    while j < N && str_eq(BASE[j].0, BASE[i].0) {
        if BASE[j].1 == C::Stop as u8 {
            return true;
        }
        j += 1;
    }
    false
}

/// For a listed plural / possessive word, the `BASE` index of its singular
/// ("ies" → "y", "es" → "", "s" → ""), if that is listed too.
const fn singular_of(i: usize) -> Option<usize> {
    let w = BASE[i].0.as_bytes();
    let n = w.len();
    if n < 4 || w[n - 1] != b's' || w[n - 2] == b's' || has_stop(i) {
        return None;
    }
    if w[n - 3] == b'i' && w[n - 2] == b'e' {
        let (stem, _) = w.split_at(n - 3);
        if let Some(j) = find_base(stem, b"y") {
            return Some(j);
        }
    }
    if w[n - 2] == b'e' {
        let (stem, _) = w.split_at(n - 2);
        if let Some(j) = find_base(stem, b"") {
            return Some(j);
        }
    }
    let (stem, _) = w.split_at(n - 1);
    find_base(stem, b"")
}

/// Number of entries a listed plural inherits from its listed singular.
const fn count_inherited() -> usize {
    let mut extra = 0;
    let mut i = 0;
    while i < N {
        if (i == 0 || !str_eq(BASE[i].0, BASE[i - 1].0))
            && let Some(j) = singular_of(i)
        {
            let mut k = j;
            while k < N && str_eq(BASE[k].0, BASE[j].0) {
                extra += 1;
                k += 1;
            }
        }
        i += 1;
    }
    extra
}

#[allow(long_running_const_eval)]
const EXTRA: usize = count_inherited();
/// Total entries in [`LEXICON`].
pub(crate) const TOTAL: usize = N + EXTRA;

/// `BASE` plus, for every listed plural ("bypasses", "wifes"), the concepts of
/// its listed singular — so a word listed in one group does not hide its
/// stem's meaning in another, without any run-time stemming for known words.
const fn build() -> [Entry; TOTAL] {
    let mut extra: [Entry; EXTRA] = [("", 0); EXTRA];
    let mut k = 0;
    let mut i = 0;
    while i < N {
        if (i == 0 || !str_eq(BASE[i].0, BASE[i - 1].0))
            && let Some(j) = singular_of(i)
        {
            let mut m = j;
            while m < N && str_eq(BASE[m].0, BASE[j].0) {
                extra[k] = (BASE[i].0, BASE[m].1);
                k += 1;
                m += 1;
            }
        }
        i += 1;
    }
    heap_sort(&mut extra);
    // merge the two sorted arrays
    let mut out: [Entry; TOTAL] = [("", 0); TOTAL];
    let (mut a, mut b, mut o) = (0, 0, 0);
    while o < TOTAL {
        if b >= EXTRA || (a < N && !entry_lt(extra[b], BASE[a])) {
            out[o] = BASE[a];
            a += 1;
        } else {
            out[o] = extra[b];
            b += 1;
        }
        o += 1;
    }
    out
}

/// The sorted lexicon (duplicates = one word with several concepts; adjacent).
#[allow(long_running_const_eval)] // sorting a few thousand entries at compile time
pub(crate) static LEXICON: [Entry; TOTAL] = build();

/// Length of the longest lexicon word (bounds segmentation work).
pub(crate) const MAX_WORD: usize = {
    let mut m = 0;
    let mut i = 0;
    while i < TOTAL {
        if LEXICON[i].0.len() > m {
            m = LEXICON[i].0.len();
        }
        i += 1;
    }
    m
};

/// FNV-1a, incremental (also used by segmentation to hash growing prefixes).
pub(crate) const FNV_INIT: u32 = 0x811c_9dc5;
#[inline]
pub(crate) const fn fnv_step(h: u32, b: u8) -> u32 {
    (h ^ b as u32).wrapping_mul(0x0100_0193)
}
#[inline]
pub(crate) const fn fnv(s: &[u8]) -> u32 {
    let mut h = FNV_INIT;
    let mut i = 0;
    while i < s.len() {
        h = fnv_step(h, s[i]);
        i += 1;
    }
    h
}

const fn str_eq(a: &str, b: &str) -> bool {
    !str_lt(a, b) && !str_lt(b, a)
}

/// Number of distinct words.
const UNIQUE: usize = {
    let mut u = 0;
    let mut i = 0;
    while i < TOTAL {
        if i == 0 || !str_eq(LEXICON[i].0, LEXICON[i - 1].0) {
            u += 1;
        }
        i += 1;
    }
    u
};

/// Distinct words in lexicon order, with the union of their concepts
/// precomputed (compile time), so a lookup is one probe and one copy.
#[allow(long_running_const_eval)]
static WORDS: [(&str, Mask); UNIQUE] = {
    let mut w = [("", Mask::EMPTY); UNIQUE];
    let mut u = 0;
    let mut i = 0;
    while i < TOTAL {
        if i == 0 || !str_eq(LEXICON[i].0, LEXICON[i - 1].0) {
            w[u].0 = LEXICON[i].0;
            u += 1;
        }
        let c = LEXICON[i].1 as usize;
        w[u - 1].1.0[c / 64] |= 1u64 << (c % 64);
        i += 1;
    }
    w
};

/// Open-addressing hash table (FNV-1a, linear probing, load factor < 1/3):
/// slot → 1 + index in [`WORDS`] (0 = empty).
const TABLE_BITS: u32 = 14;
const TABLE_SIZE: usize = 1 << TABLE_BITS;
const _: () = assert!(UNIQUE < TABLE_SIZE / 3 && TOTAL < u16::MAX as usize, "grow TABLE_BITS");

static TABLE: [u16; TABLE_SIZE] = {
    let mut t = [0u16; TABLE_SIZE];
    let mut u = 0;
    while u < UNIQUE {
        let mut slot = fnv(WORDS[u].0.as_bytes()) as usize & (TABLE_SIZE - 1);
        while t[slot] != 0 {
            slot = (slot + 1) & (TABLE_SIZE - 1);
        }
        t[slot] = (u + 1) as u16;
        u += 1;
    }
    t
};

/// Exact lookup of a word whose FNV hash is `hash`.
#[inline]
pub(crate) fn lookup_hashed(word: &[u8], hash: u32) -> Option<Mask> {
    let mut slot = hash as usize & (TABLE_SIZE - 1);
    loop {
        let v = TABLE[slot] as usize;
        if v == 0 {
            return None;
        }
        let (text, mask) = &WORDS[v - 1];
        if text.len() == word.len() && text.bytes().zip(word).all(|(a, &b)| a == b) {
            return Some(*mask);
        }
        slot = (slot + 1) & (TABLE_SIZE - 1);
    }
}

/// Lookup with light suffix stripping.
///
/// Unknown words are retried as singular ("keyloggers" → "keylogger") and as
/// verb stems ("kidnapped" → "kidnap", "making" → "make"). (Listed plurals
/// already carry their singular's concepts, see [`build`].)
#[inline]
pub(crate) fn lookup(word: &[u8]) -> Option<Mask> {
    lookup_with_hash(word, fnv(word))
}

/// [`lookup`] with the word's FNV hash already computed (by the lexer).
#[inline]
pub(crate) fn lookup_with_hash(word: &[u8], hash: u32) -> Option<Mask> {
    let n = word.len();
    if n == 0 || n > MAX_WORD + 3 {
        return None;
    }
    if n <= MAX_WORD
        && let Some(m) = lookup_hashed(word, hash)
    {
        return Some(m);
    }
    match word[n - 1] {
        b's' => plural_stem(word),
        b'd' | b'g' => verb_stem(word),
        _ => None,
    }
}

/// Look up `word[..keep] + add` (`add` is at most one byte).
fn variant(word: &[u8], keep: usize, add: Option<u8>) -> Option<Mask> {
    if keep < 2 || keep + usize::from(add.is_some()) < 3 || keep >= MAX_WORD {
        return None;
    }
    match add {
        None => lookup_hashed(&word[..keep], fnv(&word[..keep])),
        Some(a) => {
            let mut buf = [0u8; MAX_WORD + 1];
            buf[..keep].copy_from_slice(&word[..keep]);
            buf[keep] = a;
            lookup_hashed(&buf[..=keep], fnv(&buf[..=keep]))
        }
    }
}

/// Try the singular of a plural / possessive form.
#[cold]
fn plural_stem(word: &[u8]) -> Option<Mask> {
    let n = word.len();
    if n < 4 || word[n - 2] == b's' {
        return None;
    }
    if word.ends_with(b"ies")
        && let Some(m) = variant(word, n - 3, Some(b'y'))
    {
        return Some(m);
    }
    if word[n - 2] == b'e'
        && let Some(m) = variant(word, n - 2, None)
    {
        return Some(m);
    }
    variant(word, n - 1, None)
}

/// `-ed` / `-ing` forms of unknown words: "kidnapped", "synthesized", "making".
#[cold]
fn verb_stem(word: &[u8]) -> Option<Mask> {
    let n = word.len();
    if n < 5 {
        return None;
    }
    let k = if word.ends_with(b"ed") {
        n - 2
    } else if word.ends_with(b"ing") {
        n - 3
    } else {
        return None;
    };
    variant(word, k, Some(b'e'))
        .or_else(|| variant(word, k, None))
        // doubled final consonant: "kidnapped" -> "kidnap"
        .or_else(|| if k >= 3 && word[k - 1] == word[k - 2] { variant(word, k - 1, None) } else { None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexicon_is_sorted_and_sane() {
        for w in LEXICON.windows(2) {
            assert!(!entry_lt(w[1], w[0]), "not sorted: {:?} {:?}", w[0], w[1]);
        }
        for e in LEXICON.iter() {
            assert!(!e.0.is_empty());
            assert_eq!(e.0, e.0.to_lowercase(), "lexicon words must be lowercase: {}", e.0);
            assert!(!e.0.contains(' '), "multi-word entries are never matched: {:?}", e.0);
        }
    }

    #[test]
    fn lookup_and_stemming() {
        assert!(lookup(b"bomb").unwrap().has(C::ExplWeak));
        assert!(lookup(b"keyloggers").unwrap().has(C::Malware));
        assert!(lookup(b"kidnapped").unwrap().has(C::Act));
        assert!(lookup(b"synthesized").unwrap().has(C::Synth));
        assert!(!lookup(b"makes").unwrap().has(C::Make));
        assert!(lookup(b"zzzzqx").is_none());
    }
}
