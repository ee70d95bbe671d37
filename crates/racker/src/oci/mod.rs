//! The OCI image format as racker speaks it, in one place: the [`Platform`] an image is
//! chosen for, the media types racker knows ([`media_type`]), the bridge between
//! oci-spec's digests and racker's [`Digest`](crate::digest::Digest) ([`digest`]), the
//! manifests and configs racker writes itself ([`synthesize`]), and the checks every
//! source applies alike ([`checks`]).
//!
//! Documents are parsed with `oci_spec`; this module adds only what racker needs on top.
//! It sits just above [`digest`](crate::digest) and below everything else, so the
//! registry, the local sources and the runtime all take their OCI types from here and
//! none from another.

pub mod checks;
pub mod digest;
pub mod media_type;
mod platform;
pub mod synthesize;

pub use checks::{check_layer_count, diff_ids, reject_schema1, MAX_LAYERS};
pub use platform::Platform;
