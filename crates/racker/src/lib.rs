//! racker: operating-system containers on systemd-nspawn, built on a content-addressed
//! image store with snapshot overlays.
//!
//! The modules follow the data path, top-down: a [`reference`] names an image, a
//! [`registry`] or a local [`source`] yields its manifest, config and layer blobs, the [`store`] keeps blobs
//! by [`digest`] and unpacks each layer once through [`unpack`], and a [`snapshot`]ter composes
//! an image's layers into a container's root file system, which the [`runtime`] runs with
//! systemd-nspawn. [`oci`] holds the image format's types that registries, sources and the
//! runtime share. [`progress`] carries long work's progress to the fronts, which draw it.
//! The `postroj` crate (curated images, pkgprobe) and the `racker`/`postroj` command
//! lines are built on this library; nothing here depends on them.

pub mod digest;
pub mod error;
pub mod http;
pub mod objects;
pub mod oci;
pub mod pool;
pub mod private;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod runtime;
pub mod snapshot;
pub mod source;
pub mod store;
pub mod table;
pub mod timestamp;
pub mod unpack;
