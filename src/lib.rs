//! racker: operating-system containers on systemd-nspawn, built on a content-addressed
//! image store with snapshot overlays.
//!
//! The modules follow the data path, top-down:
//! [`reference`] names an image, a source ([`source`]) yields its manifest, config and
//! layer blobs, the [`store`] keeps blobs by digest and unpacks each layer once through
//! [`unpack`]; snapshots and the runtime build on the store.

pub mod digest;
pub mod reference;
pub mod unpack;
