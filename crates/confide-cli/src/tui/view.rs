//! Drawing the chat screen: [`draw`] is a pure function of the [`AppState`].
//!
//! Layout: the room list on the left, the conversation in the middle, the current
//! room's online members on the right, the input line and the status line at the
//! bottom. The conversation's title says how the room is protected (a shared-key room
//! is weaker than MLS), messages that cannot be read say why, and security alerts are
//! shown in red. Narrow terminals drop the side panels. The conversation is wrapped here
//! (so scrolling counts screen rows) and bottom-aligned like a chat. Text from others
//! has control characters neutralised before it reaches the terminal. This module must
//! not change the state; [`super::state`] asks it for row counts to scroll.

use super::state::{AppState, Level, PendingMessage};
use crate::output::{human, place_of};
use chrono::{NaiveDate, NaiveDateTime};
use confide_client::ConnectionState;
use confide_client::model::{LineKind, Row, TimelineLine};
use confide_crypto::payload::MessageId;
use confide_proto::{RoomEncryption, RoomId, UserName};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, List, ListItem, ListState, Paragraph};

/// Width of the room list, borders included.
const ROOMS_WIDTH: u16 = 24;
/// Width of the members panel, borders included.
const MEMBERS_WIDTH: u16 = 20;
/// Narrower terminals drop the room list.
const MIN_WIDTH_FOR_ROOMS: u16 = 50;
/// Narrower terminals drop the members panel.
const MIN_WIDTH_FOR_MEMBERS: u16 = 80;
/// `[21:19:56] `: where continuation lines of a message start.
const TIME_WIDTH: usize = 11;
/// The prompt before the input line.
const PROMPT: &str = "> ";

/// Where each part of the screen goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Areas {
    /// The room list, unless the terminal is too narrow.
    pub rooms: Option<Rect>,
    /// The conversation, borders included.
    pub conversation: Rect,
    /// The members panel, unless the terminal is too narrow.
    pub members: Option<Rect>,
    /// The input line.
    pub input: Rect,
    /// The status line.
    pub status: Rect,
}

impl Areas {
    /// The layout of a screen of this size.
    #[must_use]
    pub fn new(area: Rect) -> Areas {
        let [main, input, status] = Layout::vertical([
            Constraint::Min(0),
            Constraint::Length(1),
            Constraint::Length(1),
        ])
        .areas(area);
        let rooms_width = if main.width >= MIN_WIDTH_FOR_ROOMS {
            ROOMS_WIDTH
        } else {
            0
        };
        let members_width = if main.width >= MIN_WIDTH_FOR_MEMBERS {
            MEMBERS_WIDTH
        } else {
            0
        };
        let [rooms, conversation, members] = Layout::horizontal([
            Constraint::Length(rooms_width),
            Constraint::Min(0),
            Constraint::Length(members_width),
        ])
        .areas(main);
        Areas {
            rooms: (rooms_width > 0).then_some(rooms),
            conversation,
            members: (members_width > 0).then_some(members),
            input,
            status,
        }
    }
}

/// The size (columns, rows) of the text inside the conversation's borders for a
/// terminal of `size`.
#[must_use]
pub fn conversation_viewport(size: (u16, u16)) -> (u16, u16) {
    let areas = Areas::new(Rect::new(0, 0, size.0, size.1));
    let inner = Block::bordered().inner(areas.conversation);
    (inner.width, inner.height)
}

/// Draws the whole screen.
pub fn draw(frame: &mut Frame<'_>, state: &AppState) {
    let areas = Areas::new(frame.area());
    if let Some(area) = areas.rooms {
        draw_rooms(frame, state, area);
    }
    draw_conversation(frame, state, areas.conversation);
    if let Some(area) = areas.members {
        draw_members(frame, state, area);
    }
    draw_input(frame, state, areas.input);
    draw_status(frame, state, areas.status);
    if let Some(overlay) = &state.overlay {
        let area = centered(match areas.members {
            Some(members) => areas.conversation.union(members),
            None => areas.conversation,
        });
        let lines: Vec<Line<'_>> = overlay
            .lines
            .iter()
            .map(|line| Line::raw(line.as_str()))
            .collect();
        let block = Block::bordered()
            .title(format!(" {} ", overlay.title))
            .title_bottom(" Esc closes ");
        frame.render_widget(Clear, area);
        frame.render_widget(Paragraph::new(lines).block(block), area);
    }
}

fn draw_rooms(frame: &mut Frame<'_>, state: &AppState, area: Rect) {
    let items: Vec<ListItem<'_>> = state
        .rooms
        .rooms()
        .iter()
        .map(|room| {
            let mut spans = vec![Span::raw(place_of(&room.info).tag())];
            if is_shared_key(&room.info.encryption) {
                spans.push(Span::styled(" (shared key)", warning_style()));
            }
            if room.is_invitation() {
                spans.push(Span::styled(" (invited)", Style::new().italic()));
            }
            if room.unread > 0 {
                spans.push(Span::styled(
                    format!(" ({})", room.unread),
                    Style::new().bold().fg(Color::Yellow),
                ));
            }
            ListItem::new(Line::from(spans))
        })
        .collect();
    let list = List::new(items)
        .block(Block::bordered().title(" Rooms "))
        .highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut list_state = ListState::default().with_selected(
        state
            .rooms
            .selected_id()
            .and_then(|room| state.rooms.position(room)),
    );
    frame.render_stateful_widget(list, area, &mut list_state);
}

fn draw_conversation(frame: &mut Frame<'_>, state: &AppState, area: Rect) {
    let Some(room) = state.current() else {
        let block = Block::bordered().title(" no conversation ");
        let hint = Paragraph::new("Join a room with /join ROOM, or /help.").block(block);
        frame.render_widget(hint, area);
        return;
    };
    // Short, so that the scrolling and loading notes still fit after it.
    let protection = match room.info.encryption {
        RoomEncryption::Mls => Span::styled("[MLS]", Style::new().fg(Color::Green)),
        RoomEncryption::SharedKey { .. } => {
            Span::styled("[shared key, weaker than MLS]", warning_style())
        }
    };
    let mut title = vec![
        Span::raw(format!(" {} ", place_of(&room.info).tag())),
        protection,
        Span::raw(" "),
    ];
    if state.loading_history(room.id()) {
        title.push(Span::raw("(loading older messages) "));
    } else if state.scroll > 0 {
        title.push(Span::raw("(scrolled up; PageDown returns) "));
    }
    let block = Block::bordered().title(Line::from(title));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if room.is_invitation() {
        let text = format!(
            "You are invited to {}. Type /join to accept.",
            place_of(&room.info).tag()
        );
        frame.render_widget(Paragraph::new(text), inner);
        return;
    }
    let lines = visible_lines(state, room.id(), inner.width, inner.height);
    let height = u16::try_from(lines.len())
        .unwrap_or(inner.height)
        .min(inner.height);
    let bottom = Rect {
        y: inner.y + inner.height - height,
        height,
        ..inner
    };
    frame.render_widget(Paragraph::new(lines), bottom);
}

fn draw_members(frame: &mut Frame<'_>, state: &AppState, area: Rect) {
    let room = state.rooms.selected_id();
    let online: Vec<ListItem<'_>> = room
        .into_iter()
        .flat_map(|room| state.presence.online(room))
        .map(|member| {
            let mut style = Style::new();
            if member.user.same_as(&state.me) {
                style = style.bold();
            }
            let mut spans = vec![Span::styled(member.user.to_string(), style)];
            if member.owner {
                spans.push(Span::styled(" (owner)", Style::new().dim()));
            }
            ListItem::new(Line::from(spans))
        })
        .collect();
    let title = format!(" Online ({}) ", online.len());
    frame.render_widget(
        List::new(online).block(Block::bordered().title(title)),
        area,
    );
}

fn draw_input(frame: &mut Frame<'_>, state: &AppState, area: Rect) {
    let shown = |text: &str| -> String {
        text.chars()
            .map(|ch| match ch {
                '\n' => '\u{21b5}',
                ch if ch.is_control() => ' ',
                ch => ch,
            })
            .collect()
    };
    let before = shown(state.input.before_cursor());
    let after = shown(
        state
            .input
            .as_str()
            .get(state.input.before_cursor().len()..)
            .unwrap_or(""),
    );
    // Scroll the line horizontally so the cursor stays visible.
    let room = usize::from(area.width)
        .saturating_sub(PROMPT.len())
        .saturating_sub(1);
    let mut visible_before = before.as_str();
    while text_width(visible_before) > room {
        let mut chars = visible_before.chars();
        chars.next();
        visible_before = chars.as_str();
    }
    let line = Line::from(vec![
        Span::styled(PROMPT, Style::new().bold()),
        Span::raw(visible_before),
        Span::raw(after.as_str()),
    ]);
    frame.render_widget(Paragraph::new(line), area);
    let column = PROMPT.len() + text_width(visible_before);
    let x = area
        .x
        .saturating_add(u16::try_from(column).unwrap_or(u16::MAX));
    if x < area.right() {
        frame.set_cursor_position(Position::new(x, area.y));
    }
}

fn draw_status(frame: &mut Frame<'_>, state: &AppState, area: Rect) {
    let (connection, color) = match &state.connection {
        ConnectionState::Connected if state.syncing => {
            ("connected, catching up".to_owned(), Color::Yellow)
        }
        ConnectionState::Connected => ("connected".to_owned(), Color::Green),
        ConnectionState::Reconnecting { attempt, .. } => {
            (format!("reconnecting (attempt {attempt})"), Color::Yellow)
        }
        ConnectionState::Disconnected { reason } => (format!("disconnected: {reason}"), Color::Red),
        _ => ("connection changed".to_owned(), Color::Yellow),
    };
    let mut spans = Vec::new();
    if let Some(alert) = &state.alert {
        spans.push(Span::styled(
            format!(" WARNING: {} ", one_line(alert)),
            Style::new().bg(Color::Red).fg(Color::White).bold(),
        ));
    }
    spans.extend([
        Span::raw(" "),
        Span::styled(connection, Style::new().fg(color).bold()),
        Span::raw(format!(" | {} on {}", state.me, state.server)),
    ]);
    if let Some(typing) = state.typing_line() {
        spans.push(Span::raw(" | "));
        spans.push(Span::styled(
            one_line(&typing),
            Style::new().fg(Color::Cyan).italic(),
        ));
    }
    if let Some(status) = &state.status {
        let style = match status.level {
            Level::Info => Style::new(),
            Level::Warning => Style::new().fg(Color::Yellow),
            Level::Error => Style::new().fg(Color::Red).bold(),
        };
        let prefix = match status.level {
            Level::Info => "",
            Level::Warning => "warning: ",
            Level::Error => "error: ",
        };
        spans.push(Span::raw(" | "));
        spans.push(Span::styled(
            format!("{prefix}{}", one_line(&status.text)),
            style,
        ));
    }
    let line = Line::from(spans).style(Style::new().bg(Color::DarkGray).fg(Color::White));
    frame.render_widget(Paragraph::new(line), area);
}

/// A logical row of the conversation, before wrapping.
enum Item<'a> {
    Day(NaiveDate),
    Line(&'a TimelineLine),
    Pending(&'a PendingMessage),
}

fn items(state: &AppState, room: RoomId) -> Vec<Item<'_>> {
    let local_time = state.local_time;
    let mut items: Vec<Item<'_>> = state
        .timeline
        .rows(room, |timestamp| local_time(timestamp).date())
        .into_iter()
        .map(|row| match row {
            Row::Day(day) => Item::Day(day),
            Row::Line(line) => Item::Line(line),
        })
        .collect();
    items.extend(state.pending_in(room).map(Item::Pending));
    items
}

/// How many screen rows the room's conversation takes at `width`.
#[must_use]
pub fn total_rows(state: &AppState, room: RoomId, width: u16) -> usize {
    items(state, room)
        .iter()
        .map(|item| render(state, room, item, width).len())
        .sum()
}

/// How many screen rows the room's newest line takes, with its day separator if it
/// starts a new day.
#[must_use]
pub fn newest_line_rows(state: &AppState, room: RoomId, width: u16) -> usize {
    let mut lines = state.timeline.lines(room).rev();
    let Some(newest) = lines.next() else {
        return 0;
    };
    let day = |line: &TimelineLine| (state.local_time)(line.timestamp).date();
    let new_day = lines
        .next()
        .is_none_or(|previous| day(previous) != day(newest));
    render(state, room, &Item::Line(newest), width).len() + usize::from(new_day)
}

/// The rows to show: the newest `height` rows, `state.scroll` rows up from the bottom
/// (at most up to the top). Only as many items are wrapped as needed.
fn visible_lines(state: &AppState, room: RoomId, width: u16, height: u16) -> Vec<Line<'static>> {
    let height = usize::from(height);
    let wanted = state.scroll.saturating_add(height);
    let mut from_bottom: Vec<Line<'static>> = Vec::new();
    for item in items(state, room).iter().rev() {
        from_bottom.extend(render(state, room, item, width).into_iter().rev());
        if from_bottom.len() >= wanted {
            break;
        }
    }
    let skip = state.scroll.min(from_bottom.len().saturating_sub(height));
    let mut lines: Vec<Line<'static>> = from_bottom.into_iter().skip(skip).take(height).collect();
    lines.reverse();
    lines
}

/// Characters of the message a reply answers shown in front of the reply.
const QUOTED_CHARS: usize = 40;

/// What a reply answers, for the front of its line: `(re alice: the start of it…)`.
fn replied(state: &AppState, room: RoomId, to: MessageId) -> String {
    let Some(line) = state.timeline.find(room, to) else {
        return "(re an earlier message)".to_owned();
    };
    let quoted = match &line.kind {
        LineKind::Message { deleted: true, .. } => "(deleted)".to_owned(),
        LineKind::Message { text, .. } => {
            let mut quoted: String = text.chars().take(QUOTED_CHARS).collect();
            if text.chars().nth(QUOTED_CHARS).is_some() {
                quoted.truncate(quoted.trim_end().len());
                quoted.push('…');
            }
            quoted
        }
        _ => "(a message not shown)".to_owned(),
    };
    format!("(re {}: {quoted})", line.sender)
}

/// One logical row of `room` as screen rows.
fn render(state: &AppState, room: RoomId, item: &Item<'_>, width: u16) -> Vec<Line<'static>> {
    let width = usize::from(width);
    let dim = Style::new().fg(Color::DarkGray);
    match item {
        Item::Day(day) => vec![Line::styled(
            format!("--- {} ---", day.format("%Y-%m-%d")),
            dim,
        )],
        Item::Line(line) => {
            let time = format!("[{}] ", clock(state, line));
            match &line.kind {
                // The protection is not repeated on every line: the conversation's
                // title says how the room is protected.
                LineKind::Message {
                    text,
                    edited,
                    deleted,
                    reactions,
                    reply_to,
                    ..
                } => {
                    let mut shown = if *deleted {
                        "(deleted)".to_owned()
                    } else if *edited {
                        format!("{text} (edited)")
                    } else {
                        text.clone()
                    };
                    if let Some(to) = reply_to.filter(|_| !*deleted) {
                        shown = format!("{} {shown}", replied(state, room, to));
                    }
                    for reaction in reactions {
                        shown.push_str(&format!(" [{} {}]", reaction.emoji, reaction.users.len()));
                    }
                    let style = if *deleted { dim.italic() } else { Style::new() };
                    message_lines(
                        Span::styled(time, dim),
                        name_span(state, &line.sender),
                        &shown,
                        width,
                        style,
                    )
                }
                LineKind::Unreadable { reason } => {
                    let style = if reason.is_alert() {
                        Style::new().fg(Color::Red).bold()
                    } else {
                        dim.italic()
                    };
                    message_lines(
                        Span::styled(time, dim),
                        name_span(state, &line.sender),
                        &human::unreadable(reason),
                        width,
                        style,
                    )
                }
                LineKind::Member { user, change } => {
                    let notice = format!(
                        "* {}",
                        human::member_change(line.sender.as_str(), user.as_str(), *change)
                    );
                    message_lines(
                        Span::styled(time, dim),
                        Span::raw(""),
                        &notice,
                        width,
                        Style::new().fg(Color::Cyan),
                    )
                }
                _ => Vec::new(),
            }
        }
        Item::Pending(pending) => {
            let time = match &pending.acked {
                Some(ack) => format!(
                    "[{}] ",
                    (state.local_time)(ack.timestamp).format("%H:%M:%S")
                ),
                None => "[--:--:--] ".to_owned(),
            };
            message_lines(
                Span::styled(time, dim),
                Span::styled(format!("{}: ", state.me), dim),
                &pending.text,
                width,
                dim,
            )
        }
    }
}

fn is_shared_key(encryption: &RoomEncryption) -> bool {
    matches!(encryption, RoomEncryption::SharedKey { .. })
}

/// How what is weaker than it should be is shown: shared-key rooms.
fn warning_style() -> Style {
    Style::new().fg(Color::Yellow).bold()
}

fn clock(state: &AppState, line: &TimelineLine) -> String {
    let time: NaiveDateTime = (state.local_time)(line.timestamp);
    time.format("%H:%M:%S").to_string()
}

/// `alice: `, bold, in a colour that stays the same for each name.
fn name_span(state: &AppState, name: &UserName) -> Span<'static> {
    const COLORS: [Color; 6] = [
        Color::Green,
        Color::Yellow,
        Color::Blue,
        Color::Magenta,
        Color::Red,
        Color::LightCyan,
    ];
    let color = if name.same_as(&state.me) {
        Color::Cyan
    } else {
        let hash = name.canonical().bytes().fold(0usize, |hash, byte| {
            hash.wrapping_mul(31).wrapping_add(usize::from(byte))
        });
        COLORS[hash % COLORS.len()]
    };
    Span::styled(format!("{name}: "), Style::new().fg(color).bold())
}

/// A message as screen rows: `time name text` on the first row, the rest of the text
/// wrapped below, indented past the time.
fn message_lines(
    time: Span<'static>,
    name: Span<'static>,
    text: &str,
    width: usize,
    style: Style,
) -> Vec<Line<'static>> {
    let first = width.saturating_sub(time.width() + name.width());
    let rest = width.saturating_sub(TIME_WIDTH);
    let mut pieces = Vec::new();
    for (index, paragraph) in sanitize(text).split('\n').enumerate() {
        let limit = if index == 0 { first } else { rest };
        pieces.extend(wrap(paragraph, limit, rest));
    }
    let mut lines = Vec::with_capacity(pieces.len());
    let mut pieces = pieces.into_iter();
    let head = pieces.next().unwrap_or_default();
    lines.push(Line::from(vec![time, name, Span::styled(head, style)]));
    for piece in pieces {
        lines.push(Line::from(vec![
            Span::raw(" ".repeat(TIME_WIDTH)),
            Span::styled(piece, style),
        ]));
    }
    lines
}

/// Splits `text` into pieces of at most `first` columns, then `rest` columns,
/// breaking after a space where there is one.
fn wrap(text: &str, first: usize, rest: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut limit = first.max(1);
    let mut current = String::new();
    let mut width = 0;
    // Byte index just after the last space in `current`, and the width up to there.
    let mut last_break: Option<(usize, usize)> = None;
    for ch in text.chars() {
        let ch_width = char_width(ch);
        if width + ch_width > limit && !current.is_empty() {
            match last_break {
                Some((at, at_width)) if at < current.len() => {
                    let tail = current.split_off(at);
                    pieces.push(std::mem::replace(&mut current, tail));
                    width -= at_width;
                }
                _ => {
                    pieces.push(std::mem::take(&mut current));
                    width = 0;
                }
            }
            last_break = None;
            limit = rest.max(1);
        }
        current.push(ch);
        width += ch_width;
        if ch == ' ' {
            last_break = Some((current.len(), width));
        }
    }
    pieces.push(current);
    pieces
}

fn char_width(ch: char) -> usize {
    let mut buf = [0u8; 4];
    Span::raw(&*ch.encode_utf8(&mut buf)).width()
}

fn text_width(text: &str) -> usize {
    Span::raw(text).width()
}

/// Control characters other than newline from others' text become U+FFFD (tabs
/// become a space), so a message cannot move the cursor or recolour the terminal.
fn sanitize(text: &str) -> String {
    human::sanitize(text).replace('\t', " ")
}

/// A status message on one line.
fn one_line(text: &str) -> String {
    sanitize(text).replace('\n', " ")
}

/// A window in the middle of `area`.
fn centered(area: Rect) -> Rect {
    let [_, middle, _] = Layout::horizontal([
        Constraint::Percentage(5),
        Constraint::Percentage(90),
        Constraint::Percentage(5),
    ])
    .areas(area);
    let [_, middle, _] = Layout::vertical([
        Constraint::Percentage(5),
        Constraint::Percentage(90),
        Constraint::Percentage(5),
    ])
    .areas(middle);
    middle
}

#[cfg(test)]
mod tests;
