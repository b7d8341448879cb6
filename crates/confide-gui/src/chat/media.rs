//! Files and voice messages in the conversation: a file shows its name, size and type
//! with a Save… button; a voice message shows a play button, its waveform as bars and
//! its length (and how far it has played).

use confide_client::model::Media;
use confide_client::{human_size, safe_file_name};
use confide_crypto::payload::{FilePointer, MessageId};
use std::time::Duration;

/// Bar width and gap of a waveform, in points.
const BAR_WIDTH: f32 = 2.0;
const BAR_GAP: f32 = 1.0;
/// A waveform's height, in points.
const WAVE_HEIGHT: f32 = 18.0;

/// A voice message being fetched or played.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Playback {
    /// Which message.
    pub id: MessageId,
    /// Still downloading.
    pub loading: bool,
    /// How far it has played.
    pub position: Duration,
}

/// What the lines need to know to draw media.
pub(super) struct MediaView<'a> {
    /// `Err(reason)` when there is no speaker to play on.
    pub speaker: Result<(), String>,
    /// The voice message playing, if any.
    pub playback: Option<&'a Playback>,
}

/// What was asked of a file or voice message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum MediaAction {
    /// Save this file somewhere.
    Save(FilePointer),
    /// Play this voice message.
    Play(MessageId, FilePointer),
    /// Stop playing.
    Stop,
}

/// The words that stand for a media message in its line (its menu hangs on them).
pub(super) fn title(media: &Media) -> String {
    match media {
        Media::File(file) => format!("📄 {}", safe_file_name(&file.name)),
        Media::Voice(_) => "🎤 Voice message".to_owned(),
        _ => "attachment".to_owned(),
    }
}

/// The rest of a media line, after its title: size and type and Save…, or the player.
pub(super) fn details(
    ui: &mut egui::Ui,
    id: MessageId,
    media: &Media,
    view: &MediaView<'_>,
) -> Option<MediaAction> {
    match media {
        Media::File(file) => {
            ui.weak(format!("({}, {})", human_size(file.size), file.mime));
            ui.button("Save…")
                .on_hover_text("Choose where to save it, then download it")
                .clicked()
                .then(|| MediaAction::Save(file.clone()))
        }
        Media::Voice(voice) => {
            let playback = view.playback.filter(|p| p.id == id);
            let mut action = None;
            match playback {
                Some(playback) if playback.loading => {
                    ui.spinner();
                }
                Some(_) => {
                    if ui.button("⏹").on_hover_text("Stop").clicked() {
                        action = Some(MediaAction::Stop);
                    }
                }
                None => {
                    let enabled = view.speaker.is_ok();
                    let response = ui
                        .add_enabled(enabled, egui::Button::new("▶"))
                        .on_hover_text("Play");
                    let response = match &view.speaker {
                        Err(reason) => response.on_disabled_hover_text(reason.as_str()),
                        Ok(()) => response,
                    };
                    if response.clicked() {
                        action = Some(MediaAction::Play(id, voice.file.clone()));
                    }
                }
            }
            let total = Duration::from_millis(u64::from(voice.duration_ms));
            let position = playback.map(|p| p.position);
            let played = position.map_or(0.0, |at| {
                if total.is_zero() {
                    1.0
                } else {
                    (at.as_secs_f32() / total.as_secs_f32()).min(1.0)
                }
            });
            waveform(ui, &voice.waveform, played);
            match position {
                Some(at) if !playback.is_some_and(|p| p.loading) => {
                    ui.label(format!("{} / {}", clock(at), clock(total)));
                }
                _ => {
                    ui.label(clock(total));
                }
            }
            action
        }
        _ => None,
    }
}

/// Minutes and seconds, rounding up (a 0.4 s message is "0:01").
pub(super) fn clock(duration: Duration) -> String {
    let seconds = u64::try_from(duration.as_millis().div_ceil(1000)).unwrap_or(u64::MAX);
    format!("{}:{:02}", seconds / 60, seconds % 60)
}

/// The waveform as bars, the first `played` fraction in the accent colour.
fn waveform(ui: &mut egui::Ui, values: &[u8], played: f32) {
    let count = values.len().max(1);
    let width = count as f32 * (BAR_WIDTH + BAR_GAP);
    let (rect, response) =
        ui.allocate_exact_size(egui::vec2(width, WAVE_HEIGHT), egui::Sense::hover());
    response.widget_info(|| {
        egui::WidgetInfo::labeled(
            egui::Role::Image,
            true,
            format!("Waveform of {} bars", values.len()),
        )
    });
    if !ui.is_rect_visible(rect) {
        return;
    }
    let visuals = ui.visuals();
    let accent = visuals.selection.bg_fill;
    let rest = visuals.weak_text_color();
    let painter = ui.painter_at(rect);
    for (index, value) in values.iter().enumerate() {
        let height = (f32::from(*value) / 255.0 * WAVE_HEIGHT).max(2.0);
        let x = rect.left() + index as f32 * (BAR_WIDTH + BAR_GAP);
        let bar = egui::Rect::from_min_max(
            egui::pos2(x, rect.center().y - height / 2.0),
            egui::pos2(x + BAR_WIDTH, rect.center().y + height / 2.0),
        );
        let colour = if (index as f32 + 0.5) / count as f32 <= played {
            accent
        } else {
            rest
        };
        painter.rect_filled(bar, 0.0, colour);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_round_up_to_whole_seconds() {
        assert_eq!(clock(Duration::ZERO), "0:00");
        assert_eq!(clock(Duration::from_millis(400)), "0:01");
        assert_eq!(clock(Duration::from_millis(5000)), "0:05");
        assert_eq!(clock(Duration::from_millis(61_001)), "1:02");
    }
}
