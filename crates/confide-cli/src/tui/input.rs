//! Keys and the input line: which key does what ([`action_for`]), and the line being
//! edited ([`InputLine`]).
//!
//! Both are pure so that key bindings and editing are unit-tested without a terminal.
//! This module must not know about rooms or the client; it turns key presses into
//! [`Action`]s that [`super::state`] carries out.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

/// What a key press asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Type a character.
    Insert(char),
    /// Delete the character before the cursor.
    Backspace,
    /// Delete the character under the cursor.
    Delete,
    /// Move the cursor left.
    Left,
    /// Move the cursor right.
    Right,
    /// Move the cursor to the start.
    Home,
    /// Move the cursor to the end.
    End,
    /// Delete everything before the cursor.
    ClearToStart,
    /// Send the line (a message or a command).
    Submit,
    /// Switch to the next room.
    NextRoom,
    /// Switch to the previous room.
    PreviousRoom,
    /// Scroll the conversation up a page (loading older history at the top).
    PageUp,
    /// Scroll the conversation down a page.
    PageDown,
    /// Close the help or room listing window, or clear the status message.
    Dismiss,
    /// Redraw the whole screen.
    Redraw,
    /// Leave the chat.
    Quit,
}

/// The action bound to a key event, if any. Key releases do nothing.
#[must_use]
pub fn action_for(key: &KeyEvent) -> Option<Action> {
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    let alt = key.modifiers.contains(KeyModifiers::ALT);
    let action = match key.code {
        // Ctrl+Alt+letter also arrives for Esc typed just before Ctrl+letter; AltGr
        // never produces a plain ASCII letter, so it is the Ctrl binding.
        KeyCode::Char(ch) if ctrl && (!alt || ch.is_ascii_alphabetic()) => {
            match ch.to_ascii_lowercase() {
                'c' => Action::Quit,
                'n' => Action::NextRoom,
                'p' => Action::PreviousRoom,
                'a' => Action::Home,
                'e' => Action::End,
                'u' => Action::ClearToStart,
                'l' => Action::Redraw,
                _ => return None,
            }
        }
        // Alt+character is not text; AltGr (Ctrl+Alt on some systems) is.
        KeyCode::Char(_) if alt && !ctrl => return None,
        KeyCode::Char(ch) => Action::Insert(ch),
        KeyCode::Enter => Action::Submit,
        KeyCode::Backspace => Action::Backspace,
        KeyCode::Delete => Action::Delete,
        KeyCode::Left => Action::Left,
        KeyCode::Right => Action::Right,
        KeyCode::Home => Action::Home,
        KeyCode::End => Action::End,
        KeyCode::Up if alt => Action::PreviousRoom,
        KeyCode::Down if alt => Action::NextRoom,
        KeyCode::PageUp => Action::PageUp,
        KeyCode::PageDown => Action::PageDown,
        KeyCode::Esc => Action::Dismiss,
        _ => return None,
    };
    Some(action)
}

/// The line being typed, with a cursor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputLine {
    text: String,
    // A byte index at a character boundary.
    cursor: usize,
}

impl InputLine {
    /// An empty line.
    #[must_use]
    pub fn new() -> InputLine {
        InputLine::default()
    }

    /// The text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the line is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// The text before the cursor.
    #[must_use]
    pub fn before_cursor(&self) -> &str {
        self.text.get(..self.cursor).unwrap_or(&self.text)
    }

    /// Applies an editing action; returns `false` for actions that are not editing.
    pub fn edit(&mut self, action: Action) -> bool {
        match action {
            Action::Insert(ch) => self.insert(ch),
            Action::Backspace => {
                if let Some(previous) = self.previous_boundary() {
                    self.text.replace_range(previous..self.cursor, "");
                    self.cursor = previous;
                }
            }
            Action::Delete => {
                if let Some(next) = self.next_boundary() {
                    self.text.replace_range(self.cursor..next, "");
                }
            }
            Action::Left => {
                if let Some(previous) = self.previous_boundary() {
                    self.cursor = previous;
                }
            }
            Action::Right => {
                if let Some(next) = self.next_boundary() {
                    self.cursor = next;
                }
            }
            Action::Home => self.cursor = 0,
            Action::End => self.cursor = self.text.len(),
            Action::ClearToStart => {
                self.text.replace_range(..self.cursor, "");
                self.cursor = 0;
            }
            _ => return false,
        }
        true
    }

    /// Types a character at the cursor.
    pub fn insert(&mut self, ch: char) {
        self.text.insert(self.cursor, ch);
        self.cursor += ch.len_utf8();
    }

    /// Types text at the cursor (a paste). Carriage returns are dropped so that a
    /// pasted Windows line ending becomes one newline.
    pub fn insert_str(&mut self, text: &str) {
        for ch in text.chars().filter(|ch| *ch != '\r') {
            self.insert(ch);
        }
    }

    /// Empties the line and returns what it held.
    pub fn take(&mut self) -> String {
        self.cursor = 0;
        std::mem::take(&mut self.text)
    }

    /// Replaces the line, with the cursor at the end.
    pub fn set(&mut self, text: String) {
        self.cursor = text.len();
        self.text = text;
    }

    fn previous_boundary(&self) -> Option<usize> {
        self.before_cursor()
            .char_indices()
            .next_back()
            .map(|(at, _)| at)
    }

    fn next_boundary(&self) -> Option<usize> {
        let ch = self.text.get(self.cursor..)?.chars().next()?;
        Some(self.cursor + ch.len_utf8())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, modifiers: KeyModifiers) -> Option<Action> {
        action_for(&KeyEvent::new(code, modifiers))
    }

    #[test]
    fn bindings() {
        let none = KeyModifiers::NONE;
        let ctrl = KeyModifiers::CONTROL;
        let alt = KeyModifiers::ALT;
        assert_eq!(key(KeyCode::Enter, none), Some(Action::Submit));
        assert_eq!(key(KeyCode::Char('c'), ctrl), Some(Action::Quit));
        assert_eq!(key(KeyCode::Char('n'), ctrl), Some(Action::NextRoom));
        assert_eq!(key(KeyCode::Char('p'), ctrl), Some(Action::PreviousRoom));
        assert_eq!(key(KeyCode::Up, alt), Some(Action::PreviousRoom));
        assert_eq!(key(KeyCode::Down, alt), Some(Action::NextRoom));
        assert_eq!(key(KeyCode::Up, none), None);
        assert_eq!(key(KeyCode::PageUp, none), Some(Action::PageUp));
        assert_eq!(key(KeyCode::PageDown, none), Some(Action::PageDown));
        assert_eq!(key(KeyCode::Esc, none), Some(Action::Dismiss));
        assert_eq!(key(KeyCode::Char('x'), none), Some(Action::Insert('x')));
        assert_eq!(
            key(KeyCode::Char('X'), KeyModifiers::SHIFT),
            Some(Action::Insert('X'))
        );
        assert_eq!(
            key(KeyCode::Char('@'), ctrl | alt),
            Some(Action::Insert('@')),
            "AltGr"
        );
        assert_eq!(
            key(KeyCode::Char('c'), ctrl | alt),
            Some(Action::Quit),
            "Esc then Ctrl+C"
        );
        assert_eq!(key(KeyCode::Char('x'), alt), None);
        assert_eq!(key(KeyCode::Char('z'), ctrl), None);
        assert_eq!(key(KeyCode::Char('u'), ctrl), Some(Action::ClearToStart));
        assert_eq!(key(KeyCode::Char('l'), ctrl), Some(Action::Redraw));
        assert_eq!(key(KeyCode::F(1), none), None);
        let mut release = KeyEvent::new(KeyCode::Enter, none);
        release.kind = KeyEventKind::Release;
        assert_eq!(action_for(&release), None);
    }

    #[test]
    fn editing_works_on_characters_not_bytes() {
        let mut line = InputLine::new();
        for ch in "héllo".chars() {
            assert!(line.edit(Action::Insert(ch)));
        }
        line.edit(Action::Left);
        line.edit(Action::Left);
        line.edit(Action::Left);
        line.edit(Action::Backspace);
        assert_eq!(line.as_str(), "hllo");
        assert_eq!(line.before_cursor(), "h");
        line.edit(Action::Insert('é'));
        line.edit(Action::Delete);
        assert_eq!(line.as_str(), "hélo");
        line.edit(Action::End);
        line.edit(Action::Right);
        line.edit(Action::Delete);
        assert_eq!(line.before_cursor(), "hélo");
        line.edit(Action::Home);
        line.edit(Action::Left);
        line.edit(Action::Backspace);
        assert_eq!(line.before_cursor(), "");
        line.edit(Action::Right);
        line.edit(Action::Right);
        line.edit(Action::ClearToStart);
        assert_eq!(line.as_str(), "lo");
        assert!(!line.edit(Action::Submit));
        line.insert_str("a\r\nb");
        assert_eq!(line.as_str(), "a\nblo");
        assert_eq!(line.take(), "a\nblo");
        assert!(line.is_empty());
        line.set("again".to_owned());
        assert_eq!(line.before_cursor(), "again");
    }
}
