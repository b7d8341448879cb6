//! Integration tests of confide-audio: codec interoperability with the standard Opus tools,
//! speech through the whole chain, and the cpal device paths through ALSA virtual devices.

mod codec;
mod devices;
mod speech;
mod support;
