//! The categories of blocked content (re-exported at the crate root).

/// Category of blocked content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    PromptInjection,
    Jailbreak,
    Weapons,
    Malware,
    Fraud,
    Drugs,
    SelfHarm,
    Violence,
    Hate,
    SexualMinors,
    Harassment,
    Disinformation,
}

impl Category {
    /// Every category.
    pub const ALL: [Category; 12] = [
        Category::PromptInjection,
        Category::Jailbreak,
        Category::Weapons,
        Category::Malware,
        Category::Fraud,
        Category::Drugs,
        Category::SelfHarm,
        Category::Violence,
        Category::Hate,
        Category::SexualMinors,
        Category::Harassment,
        Category::Disinformation,
    ];

    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::PromptInjection => "prompt_injection",
            Category::Jailbreak => "jailbreak",
            Category::Weapons => "weapons",
            Category::Malware => "malware",
            Category::Fraud => "fraud",
            Category::Drugs => "drugs",
            Category::SelfHarm => "self_harm",
            Category::Violence => "violence",
            Category::Hate => "hate",
            Category::SexualMinors => "sexual_minors",
            Category::Harassment => "harassment",
            Category::Disinformation => "disinformation",
        }
    }
}
