//! `:shortcode:` emoji while typing: finished shortcodes become their emoji, and a
//! started one (a colon and two letters) gets suggestions. Pure functions over the
//! input's text, so that the behaviour is tested without a window.

/// Characters a shortcode is made of (gemoji: `+1`, `thumbs_up`, `t-rex`).
fn is_shortcode_char(ch: char) -> bool {
    ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '_' | '+' | '-')
}

/// The result of [`replace_shortcodes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaced {
    /// The text with every known `:shortcode:` replaced by its emoji.
    pub text: String,
    /// Where the cursor (a character index) is after the replacements.
    pub cursor: usize,
}

/// Replaces every known `:shortcode:` in `text` by its emoji; `cursor` is a character
/// index that is moved along. `None` if nothing was replaced (unknown shortcodes and
/// lone colons stay as typed, so `12:30:` or `:notanemoji:` are left alone).
#[must_use]
pub fn replace_shortcodes(text: &str, cursor: usize) -> Option<Replaced> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut new_cursor = cursor;
    let mut replaced = false;
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == ':' {
            let start = i + 1;
            let mut end = start;
            while end < chars.len() && is_shortcode_char(chars[end]) {
                end += 1;
            }
            if end > start && end < chars.len() && chars[end] == ':' {
                let code: String = chars[start..end].iter().collect();
                if let Some(emoji) = emojis::get_by_shortcode(&code) {
                    out.push_str(emoji.as_str());
                    let removed = end + 1 - i;
                    let added = emoji.as_str().chars().count();
                    if cursor > end {
                        new_cursor = new_cursor + added - removed;
                    } else if cursor > i {
                        // The cursor was inside the shortcode: put it after the emoji.
                        new_cursor = new_cursor - (cursor - i) + added;
                    }
                    replaced = true;
                    i = end + 1;
                    continue;
                }
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    replaced.then_some(Replaced {
        text: out,
        cursor: new_cursor,
    })
}

/// A shortcode being typed just before the cursor: its fragment (after the colon) and
/// where its colon is (a character index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// The letters typed after the colon.
    pub fragment: String,
    /// The colon's character index.
    pub colon: usize,
}

/// The shortcode being typed before `cursor` (a character index), if there is one of at
/// least two characters: `:sm` at the end of a word.
#[must_use]
pub fn started_shortcode(text: &str, cursor: usize) -> Option<Started> {
    let before: Vec<char> = text.chars().take(cursor).collect();
    let mut start = before.len();
    while start > 0 && is_shortcode_char(before[start - 1]) {
        start -= 1;
    }
    if start == 0 || before[start - 1] != ':' || before.len() - start < 2 {
        return None;
    }
    let colon = start - 1;
    // `12:30`: a colon right after a letter or digit starts no shortcode.
    if colon > 0 && before[colon - 1].is_alphanumeric() {
        return None;
    }
    Some(Started {
        fragment: before[start..].iter().collect(),
        colon,
    })
}

/// The newest Unicode version whose emoji the bundled font (Noto Color Emoji 2.042, in
/// Debian 12) draws; newer ones are left out of suggestions and the picker.
const NEWEST_DRAWN: emojis::UnicodeVersion = emojis::UnicodeVersion::new(15, 0);

/// Recently used emoji kept for the picker.
pub const RECENT: usize = 24;

/// Whether the picker and suggestions offer `emoji`: a base emoji (skin tones are
/// variants of it) that the font draws.
#[must_use]
pub fn offered(emoji: &emojis::Emoji) -> bool {
    emoji.unicode_version() <= NEWEST_DRAWN
        && emoji
            .skin_tone()
            .is_none_or(|tone| tone == emojis::SkinTone::Default)
}

/// Emoji whose name or a shortcode contains every word of `query` (case-insensitive),
/// at most `limit`, in Unicode order.
#[must_use]
pub fn search(query: &str, limit: usize) -> Vec<&'static emojis::Emoji> {
    let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
    if words.is_empty() {
        return Vec::new();
    }
    emojis::iter()
        .filter(|emoji| offered(emoji))
        .filter(|emoji| {
            let name = emoji.name().to_lowercase();
            words.iter().all(|word| {
                name.contains(word.as_str())
                    || emoji.shortcodes().any(|code| code.contains(word.as_str()))
            })
        })
        .take(limit)
        .collect()
}

/// The emoji of a group that the picker offers.
pub fn in_group(group: emojis::Group) -> impl Iterator<Item = &'static emojis::Emoji> {
    group.emojis().filter(|emoji| offered(emoji))
}

/// A short name for a picker tab.
#[must_use]
pub fn group_label(group: emojis::Group) -> &'static str {
    use emojis::Group;
    match group {
        Group::SmileysAndEmotion => "Smileys",
        Group::PeopleAndBody => "People",
        Group::AnimalsAndNature => "Nature",
        Group::FoodAndDrink => "Food",
        Group::TravelAndPlaces => "Travel",
        Group::Activities => "Activities",
        Group::Objects => "Objects",
        Group::Symbols => "Symbols",
        Group::Flags => "Flags",
    }
}

/// Puts `emoji` first in the recently used list (at most [`RECENT`]).
pub fn remember(recent: &mut Vec<String>, emoji: &str) {
    recent.retain(|e| e != emoji);
    recent.insert(0, emoji.to_owned());
    recent.truncate(RECENT);
}

/// Inserts `emoji` at `cursor` (a character index); returns the text and the cursor
/// after the emoji.
#[must_use]
pub fn insert(text: &str, cursor: usize, emoji: &str) -> Replaced {
    splice(text, cursor, cursor, emoji)
}

/// Replaces the characters from `from` to `to` (character indices) with `with`; the
/// cursor goes after it.
fn splice(text: &str, from: usize, to: usize, with: &str) -> Replaced {
    let chars: Vec<char> = text.chars().collect();
    let to = to.min(chars.len());
    let from = from.min(to);
    let mut out: String = chars[..from].iter().collect();
    out.push_str(with);
    let cursor = out.chars().count();
    out.extend(&chars[to..]);
    Replaced { text: out, cursor }
}

/// Emoji whose shortcode starts with `fragment` (best first: exact match, then shorter
/// codes), at most `limit`, each with the matching shortcode.
#[must_use]
pub fn suggestions(fragment: &str, limit: usize) -> Vec<(&'static str, &'static emojis::Emoji)> {
    let mut found: Vec<(&'static str, &'static emojis::Emoji)> = emojis::iter()
        .flat_map(|emoji| emoji.shortcodes().map(move |code| (code, emoji)))
        .filter(|(code, emoji)| code.starts_with(fragment) && offered(emoji))
        .collect();
    found.sort_by_key(|(code, _)| (*code != fragment, code.len(), *code));
    found.dedup_by_key(|(_, emoji)| emoji.as_str());
    found.truncate(limit);
    found
}

/// Puts `emoji` in place of the shortcode started at `started` (see
/// [`started_shortcode`]) that ends at `cursor`; returns the text and the new cursor.
#[must_use]
pub fn complete(text: &str, started: &Started, cursor: usize, emoji: &str) -> Replaced {
    splice(text, started.colon, cursor, emoji)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_matches_names_and_shortcodes_and_skips_variants() {
        let found = search("party", 10);
        assert!(found.iter().any(|e| e.as_str() == "🎉"), "{found:?}");
        let hearts = search("red heart", 5);
        assert_eq!(hearts[0].as_str(), "❤\u{fe0f}");
        assert!(search("   ", 5).is_empty());
        assert!(search("thumbs", 50).iter().all(|e| offered(e)));
        // Skin-tone variants are not offered separately.
        let waves = search("waving hand", 50);
        assert_eq!(waves.len(), 1, "{waves:?}");
    }

    #[test]
    fn groups_recent_and_insertion() {
        assert!(in_group(emojis::Group::SmileysAndEmotion).any(|e| e.as_str() == "😀"));
        let mut recent = Vec::new();
        for emoji in ["😀", "🎉", "😀"] {
            remember(&mut recent, emoji);
        }
        assert_eq!(recent, ["😀", "🎉"]);
        for i in 0..40 {
            remember(&mut recent, &i.to_string());
        }
        assert_eq!(recent.len(), RECENT);
        let done = insert("ab", 1, "🎉");
        assert_eq!(done.text, "a🎉b");
        assert_eq!(done.cursor, 2);
        assert_eq!(insert("ab", 99, "x").text, "abx");
    }

    #[test]
    fn finished_shortcodes_become_emoji_and_the_cursor_follows() {
        let text = "hi :smile: and :tada:!";
        let got = replace_shortcodes(text, text.chars().count()).unwrap();
        assert_eq!(got.text, "hi 😄 and 🎉!");
        assert_eq!(got.cursor, got.text.chars().count());
        // A cursor before the shortcode does not move.
        assert_eq!(replace_shortcodes(":+1: x", 5).unwrap().cursor, 2);
        assert_eq!(replace_shortcodes(":+1: x", 0).unwrap().cursor, 0);
        assert_eq!(replace_shortcodes(":+1: x", 0).unwrap().text, "👍 x");
    }

    #[test]
    fn unknown_codes_times_and_lone_colons_stay() {
        for text in [
            "at 12:30:45",
            ":notanemoji:",
            "a : b : c",
            "::",
            ":smile",
            "no colons",
        ] {
            assert_eq!(replace_shortcodes(text, 0), None, "{text}");
        }
        assert_eq!(
            replace_shortcodes(":nope: :heart:", 0).unwrap().text,
            ":nope: ❤\u{fe0f}"
        );
    }

    #[test]
    fn a_started_shortcode_needs_a_colon_and_two_letters() {
        assert_eq!(started_shortcode("hi :s", 5), None);
        assert_eq!(
            started_shortcode("hi :sm", 6),
            Some(Started {
                fragment: "sm".to_owned(),
                colon: 3
            })
        );
        assert_eq!(started_shortcode("12:30", 5), None);
        assert_eq!(started_shortcode("sm", 2), None);
        // Only what is before the cursor counts.
        assert_eq!(started_shortcode(":smile rest", 3).unwrap().fragment, "sm");
    }

    #[test]
    fn suggestions_put_exact_and_short_codes_first_and_complete_in_place() {
        let found = suggestions("smile", 5);
        assert_eq!(found[0].0, "smile");
        assert!(found.len() <= 5);
        assert!(found.iter().all(|(code, _)| code.starts_with("smile")));
        assert!(suggestions("zzzzzz", 5).is_empty());
        let started = started_shortcode("hi :ta and", 6).unwrap();
        let done = complete("hi :ta and", &started, 6, "🎉");
        assert_eq!(done.text, "hi 🎉 and");
        assert_eq!(done.cursor, 4);
    }
}
