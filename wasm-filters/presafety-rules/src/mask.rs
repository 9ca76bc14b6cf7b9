//! Concept identifiers and fixed-size concept bit sets.
//!
//! Every lexicon word maps to one or more *concepts* (`C`). A token carries the
//! union of its concepts as a [`Mask`]; rules are written over masks, never over
//! raw strings, so adding a synonym is a one-line lexicon change.

/// Number of 64-bit words in a [`Mask`]; 4 words = up to 256 concepts.
pub(crate) const MASK_WORDS: usize = 4;

/// A set of concepts. Plain `Copy` data, usable in `const` context.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct Mask(pub [u64; MASK_WORDS]);

impl Mask {
    pub const EMPTY: Mask = Mask([0; MASK_WORDS]);

    pub const fn bit(c: C) -> Mask {
        let i = c as usize;
        let mut m = [0u64; MASK_WORDS];
        m[i / 64] = 1u64 << (i % 64);
        Mask(m)
    }

    /// Union of a list of concepts.
    pub const fn of(cs: &[C]) -> Mask {
        let mut m = Mask::EMPTY;
        let mut i = 0;
        while i < cs.len() {
            m = m.or(Mask::bit(cs[i]));
            i += 1;
        }
        m
    }

    pub const fn or(self, o: Mask) -> Mask {
        let mut r = self.0;
        let mut i = 0;
        while i < MASK_WORDS {
            r[i] |= o.0[i];
            i += 1;
        }
        Mask(r)
    }

    #[inline]
    pub fn hits(&self, o: &Mask) -> bool {
        (self.0[0] & o.0[0]) | (self.0[1] & o.0[1]) | (self.0[2] & o.0[2]) | (self.0[3] & o.0[3]) != 0
    }

    #[inline]
    pub fn has(&self, c: C) -> bool {
        let i = c as usize;
        self.0[i / 64] & (1u64 << (i % 64)) != 0
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0 == [0; MASK_WORDS]
    }

    #[inline]
    pub fn insert(&mut self, c: C) {
        self.insert_idx(c as usize);
    }

    #[inline]
    pub fn insert_idx(&mut self, i: usize) {
        self.0[i / 64] |= 1u64 << (i % 64);
    }
}

/// Build a [`Mask`] from concept names: `m!(Make, Create)`.
macro_rules! m {
    ($($c:ident),* $(,)?) => { $crate::mask::Mask::of(&[$($crate::mask::C::$c),*]) };
}
pub(crate) use m;

macro_rules! concepts {
    ($($(#[$meta:meta])* $name:ident,)*) => {
        /// Concepts. Grouped by the rule family that mainly uses them; most are
        /// assigned by the lexicon, the ones marked *emitted* are produced by phrase
        /// rules (see `rules.rs`), the ones marked *flag* come from token flags.
        #[repr(u16)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[allow(dead_code)] // some concepts only exist to be listed in the lexicon / rules
        pub(crate) enum C {
            $($(#[$meta])* $name,)*
            /// sentinel: number of concepts.
            Count,
        }

        /// Concept names in discriminant order (debugging and tests).
        #[allow(dead_code)]
        pub(crate) const CONCEPT_NAMES: &[&str] = &[$(stringify!($name)),*];
    };
}

concepts! {
    /// Known word with no meaning for the rules (stops suffix stripping: "makes", "made").
    Stop,
    // ---- grammar, intent ----
    How,
    To,
    Aux,
    Subj,
    Many,
    Best,
    WayW,
    /// emitted / lexicon: actionable "how to" request ("how do i", "best way to", "steps", "recipe").
    HowTo,
    /// request verbs and desire ("tell me", "give", "i want", "please").
    Req,
    /// flag: first token of a sentence or line.
    SStart,
    /// negation / protective framing that breaks a harmful reading ("without", "avoid", "safely").
    Neg,
    My,
    SelfW,
    You,
    Are,
    AsW,
    ActW,
    From,
    Now,
    On,
    Into,
    Get,
    Away,
    Out,
    With,
    Anything,
    DoW,
    /// words that turn "make" into an idiom ("make sure", "make up", "make money").
    MakeIdiom,
    // ---- generic harm vocabulary ----
    Make,
    Synth,
    Create,
    Defense,
    NonCode,
    HistQ,
    /// emitted: "why did", "how did", "who first" etc.
    Why,
    PastAux,
    Game,
    Tech,
    Legal,
    Fiction,
    Detail,
    Photo,
    Animal,
    // ---- weapons ----
    ExplWeak,
    ExplStrong,
    BombMod,
    BombBenign,
    Chem,
    Weaponize,
    Toxic,
    Gas,
    /// emitted: "toxic gas", "poison gas".
    ToxGas,
    Gun,
    Ghost,
    GhostGun,
    ThreeD,
    PrintW,
    Print3D,
    Convert,
    Full,
    AutoW,
    Sear,
    FullAuto,
    // ---- violence ----
    Act,
    Victim,
    Partner,
    Caught,
    /// emitted / lexicon: evading detection or the law ("without getting caught", "undetectable").
    Evade,
    NegEv,
    CoverW,
    Tracks,
    Body,
    Dispose,
    Knock,
    Spike,
    Drink,
    Mass,
    Casualties,
    // ---- self-harm ----
    EndTake,
    Life,
    SelfActStrong,
    SelfActWeak,
    /// emitted: strong self-harm act ("kill myself", "end my life", "suicide").
    ShStrong,
    /// emitted: weaker self-harm act ("cut myself", "self harm").
    ShWeak,
    ShHelp,
    Dose,
    Die,
    Wake,
    /// emitted: "to die", "to overdose", "not wake up".
    ToDie,
    /// emitted: "how many", "how much".
    Qty,
    WantW,
    // ---- jailbreak / injection ----
    Grandma,
    YouAre,
    NoW,
    RulesW,
    NoRules,
    Instr,
    Told,
    Ignore,
    Prior,
    RevealStrong,
    RevealWeak,
    SysAdj,
    PromptW,
    SysPrompt,
    SysPromptStrong,
    TextW,
    Above,
    TextAbove,
    Your,
    MyOwn,
    RoleW,
    /// flag: a role word written as a chat-template tag ("<system>", "### system", "[INST]").
    RoleTag,
    InjWeak,
    Override,
    SysWord,
    ModeW,
    JbModeAdj,
    JbMode,
    Device,
    PersonaW,
    /// flag: an all-caps jailbreak persona name (DAN, AIM, STAN ...).
    PersonaName,
    JbCue,
    CharacterW,
    StayW,
    StayChar,
    EvilStrong,
    EvilWeak,
    AiW,
    EvilAi,
    // ---- malware ----
    Malware,
    Malicious,
    CodeW,
    Ddos,
    Steal,
    Creds,
    StealCreds,
    Server,
    Covert,
    Hack,
    Social,
    Stalk,
    AvW,
    EvadeAv,
    Infect,
    Spread,
    // ---- fraud ----
    CardW,
    Credit,
    CreditCard,
    Else,
    Others,
    UseW,
    Carding,
    Fake,
    Docs,
    Forge,
    Money,
    Prop,
    Phishing,
    Impersonate,
    Brand,
    ImpBrand,
    Trick,
    Launder,
    Dirty,
    DirtyMoney,
    TaxW,
    TaxEvadeV,
    Accounts,
    ManyAcc,
    Bypass,
    Verify,
    BypassVerify,
    Scam,
    Identity,
    Recovery,
    // ---- drugs ----
    Drug,
    DrugGeneric,
    Sell,
    Smuggle,
    // ---- sexual content involving minors ----
    Sexual,
    Minor,
    AgeNum,
    YearW,
    Old,
    Little,
    GirlBoy,
    ProtectChild,
    // ---- hate ----
    Group,
    GroupMod,
    GroupNoun,
    Dehumanize,
    Eliminate,
    Should,
    HateWrite,
    Racist,
    Jokes,
    IsAre,
    Inferior,
    Race,
    // ---- added concepts ----
    Never,
    HelpW,
    /// emitted: role tag naming a privileged role (`<system>`).
    SysTag,
    /// emitted: "ignore ... instructions".
    IgnInstr,
    /// emitted: "you are an evil AI".
    EvilPersona,
    Awareness,
    PhishArtifact,
    ForgeStrong,
    LaunderV,
    BuyW,
    TellW,
    SexualWeak,
    BodyBenign,
    PromptX,
    NewW,
    ChemMod,
    ChemNoun,
    /// emitted: "evade antivirus".
    AvEvasion,
    /// emitted: violent act aimed at a person ("poison my neighbor").
    ActVictim,
    /// emitted: negated desire ("don't want").
    NegReq,
    /// criticism / analysis framing for hate-speech questions.
    Critique,
    FloodW,
    VoidW,
    ExistW,
    /// emitted: "new instructions", "updated directive".
    NewInstr,
    KeyW,
    LogV,
    /// emitted: "log every keystroke".
    KeyLog,
    CloneV,
    Crime,
    JumpW,
    HeightW,
    EndW,
    ItW,
    AllW,
    /// flag: the token was changed by obfuscation folding.
    Obfuscated,
    /// emitted: "you were told/given/configured".
    YouTold,
    /// emitted: malware-like behaviour ("encrypts files and demands bitcoin").
    MalBehav,
    EncryptW,
    RansomW,
    MalwareCaps,
    DefenseCore,
    WristW,
    OverdoseW,
    DoneW,
    DeathW,
    BeatW,
    BurnW,
    DownW,
    FireW,
    RunW,
    AccidentW,
    WeaponizeW,
}

const _: () = assert!((C::Count as usize) <= MASK_WORDS * 64, "too many concepts for Mask (ids are stored as u8)");
