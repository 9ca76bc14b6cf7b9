//! Stage 1, character folding: compatibility decomposition, accents, case,
//! homoglyphs, invisible characters and Unicode tag characters.

use unicode_normalization::char::{decompose_compatible, is_combining_mark};

/// Per-character flags passed from folding to the lexer.
pub(super) const CF_UPPER: u8 = 1;
pub(super) const CF_OBF: u8 = 2;

/// Zero-width, bidi and other invisible format characters that are deleted.
#[inline]
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E001F}' | '\u{E007F}' | '\u{E0100}'..='\u{E01EF}')
}

/// Upper-case look-alikes whose lower-case form looks different (Greek Μ → μ).
#[rustfmt::skip]
fn homoglyph_upper(c: char) -> Option<char> {
    Some(match c {
        'Α' => 'a', 'Β' => 'b', 'Ε' => 'e', 'Ζ' => 'z', 'Η' => 'h', 'Ι' => 'i', 'Κ' => 'k', 'Μ' => 'm',
        'Ν' => 'n', 'Ο' => 'o', 'Ρ' => 'p', 'Τ' => 't', 'Υ' => 'y', 'Χ' => 'x',
        'А' => 'a', 'В' => 'b', 'Е' => 'e', 'К' => 'k', 'М' => 'm', 'Н' => 'h', 'О' => 'o', 'Р' => 'p',
        'С' => 'c', 'Т' => 't', 'У' => 'y', 'Х' => 'x', 'Ѕ' => 's', 'І' => 'i', 'Ј' => 'j', 'Ү' => 'y',
        _ => return None,
    })
}

/// Look-alike letters from other scripts → ASCII (input is already lowercase).
#[rustfmt::skip]
fn homoglyph(c: char) -> Option<char> {
    Some(match c {
        // Cyrillic
        'а' => 'a', 'в' => 'b', 'е' | 'ё' | 'є' => 'e', 'з' => '3', 'і' | 'ї' => 'i', 'ј' => 'j', 'к' => 'k',
        'м' => 'm', 'н' => 'h', 'о' => 'o', 'п' => 'n', 'р' => 'p', 'с' => 'c', 'т' => 't', 'у' | 'ў' => 'y',
        'х' => 'x', 'ѕ' => 's', 'ԁ' => 'd', 'ԛ' => 'q', 'ԝ' => 'w', 'ѡ' => 'w', 'ү' => 'y', 'һ' => 'h',
        'ӏ' => 'l', 'г' => 'r', 'ь' => 'b', 'ɩ' => 'i', 'ԍ' => 'g', 'ѵ' => 'v', 'ҫ' => 'c',
        // Greek
        'α' => 'a', 'β' => 'b', 'γ' => 'y', 'δ' => 'd', 'ε' => 'e', 'ζ' => 'z', 'η' => 'n', 'ι' => 'i',
        'κ' => 'k', 'ν' => 'v', 'ο' => 'o', 'ρ' => 'p', 'σ' => 'o', 'ς' => 'c', 'τ' => 't', 'υ' => 'u',
        'χ' => 'x', 'ω' => 'w', 'μ' => 'u', 'ϲ' => 'c', 'ϳ' => 'j', 'ϱ' => 'p', 'ϵ' => 'e', 'θ' => 'o',
        // Armenian / Cherokee-ish / misc Latin
        'օ' => 'o', 'ս' => 'u', 'ց' => 'g', 'հ' => 'h', 'ո' => 'n', 'ռ' => 'n', 'ı' => 'i', 'ȷ' => 'j',
        'ł' => 'l', 'ø' => 'o', 'đ' => 'd', 'ħ' => 'h', 'ŧ' => 't', 'ƀ' => 'b', 'ɑ' => 'a', 'ɡ' => 'g',
        'ɪ' => 'i', 'ʀ' => 'r', 'ʏ' => 'y', 'ʜ' => 'h', 'ᴀ' => 'a', 'ʙ' => 'b', 'ᴄ' => 'c', 'ᴅ' => 'd',
        'ᴇ' => 'e', 'ꜰ' => 'f', 'ɢ' => 'g', 'ᴊ' => 'j', 'ᴋ' => 'k', 'ʟ' => 'l', 'ᴍ' => 'm', 'ɴ' => 'n',
        'ᴏ' => 'o', 'ᴘ' => 'p', 'ǫ' => 'q', 'ꜱ' => 's', 'ᴛ' => 't', 'ᴜ' => 'u', 'ᴠ' => 'v', 'ᴡ' => 'w',
        'ᴢ' => 'z', 'ŋ' => 'n', 'ƒ' => 'f', 'ɛ' => 'e', 'ɔ' => 'o', 'ʋ' => 'v', 'ɒ' => 'o', 'ɐ' => 'a',
        'ǝ' => 'e', 'ə' => 'e', 'ɾ' => 'r', 'ʂ' => 's', 'ʐ' => 'z', 'ƙ' => 'k', 'ɓ' => 'b', 'ɗ' => 'd',
        // punctuation look-alikes
        '\u{2018}' | '\u{2019}' | '\u{201B}' | '\u{2032}' | '\u{02BC}' | '\u{02B9}' | '`' | '\u{00B4}' => '\'',
        '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FE58}' | '\u{FE63}' | '\u{FF0D}' => '-',
        '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{00AB}' | '\u{00BB}' => '"',
        '\u{2039}' | '\u{3008}' | '\u{27E8}' => '<',
        '\u{203A}' | '\u{3009}' | '\u{27E9}' => '>',
        '\u{00B7}' | '\u{2022}' | '\u{2027}' | '\u{30FB}' | '\u{2219}' | '\u{22C5}' => '.',
        _ => return None,
    })
}

/// Letters in emoji-like blocks that have no compatibility decomposition.
fn enclosed_letter(c: char) -> Option<char> {
    let v = c as u32;
    let base = match v {
        0x1F1E6..=0x1F1FF => 0x1F1E6, // regional indicators 🇦
        0x1F130..=0x1F149 => 0x1F130, // squared 🄰
        0x1F150..=0x1F169 => 0x1F150, // negative circled 🅐
        0x1F170..=0x1F189 => 0x1F170, // negative squared 🅰
        _ => return None,
    };
    char::from_u32(u32::from(b'a') + v - base)
}

/// Fold one input character; calls `emit` for each resulting character.
#[inline]
pub(super) fn fold_char(c: char, emit: &mut impl FnMut(char, u8)) {
    if c.is_ascii() {
        if c.is_ascii_uppercase() {
            emit(c.to_ascii_lowercase(), CF_UPPER);
        } else {
            emit(c, 0);
        }
        return;
    }
    if is_invisible(c) {
        emit('\u{0}', CF_OBF); // deletion marker: lexer marks the surrounding token
        return;
    }
    if let Some(a) = enclosed_letter(c) {
        emit(a, CF_OBF);
        return;
    }
    if ('\u{E0020}'..='\u{E007E}').contains(&c) {
        // Unicode tag characters: invisible copies of ASCII used to smuggle text.
        let a = char::from_u32(c as u32 - 0xE0000).unwrap_or(' ');
        emit(a.to_ascii_lowercase(), CF_OBF);
        return;
    }
    if ('\u{AC00}'..='\u{D7A3}').contains(&c) {
        emit(c, 0); // keep Hangul syllables whole
        return;
    }
    if c.is_whitespace() {
        emit(if c == '\u{2028}' || c == '\u{2029}' || c == '\u{85}' { '\n' } else { ' ' }, 0);
        return;
    }
    let upper = c.is_uppercase();
    if let Some(a) = homoglyph_upper(c) {
        emit(a, CF_OBF | CF_UPPER);
        return;
    }
    decompose_compatible(c, |d| {
        if is_combining_mark(d) || is_invisible(d) {
            return;
        }
        for l in d.to_lowercase() {
            let out = homoglyph(l).unwrap_or(l);
            let fl = if out.is_ascii() && out.is_alphanumeric() { CF_OBF } else { 0 };
            emit(out, fl | if upper { CF_UPPER } else { 0 });
        }
    });
}
