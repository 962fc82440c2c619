//! cmr: XEP-0354 Customizable Message Routing for XMPP servers.
//!
//! The host server keeps its sessions and delivers stanzas; this library
//! keeps, per account, the sessions the host registered and the routing
//! state, and answers which sessions get a message sent to the bare JID,
//! plus the XEP-0354 IQs and disco features. [`Router`] is the safe Rust
//! API; [`ffi`] wraps it in a C ABI (`include/cmr.h`).

mod algorithm;
mod command;
mod error;
pub mod ffi;
mod metrics;
mod policy;
mod protocol;
mod registry;
mod rotation;
mod router;
mod sessions;

pub use algorithm::{Algorithm, Pick};
pub use error::Error;
pub use policy::Policy;
pub use router::{Message, Router};

/// What the fuzz targets reach beyond the API: the bounded XML parser.
#[doc(hidden)]
pub use protocol::parse_stanza;
