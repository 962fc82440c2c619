//! cmr: XEP-0354 Customizable Message Routing for XMPP servers.
//!
//! The host server keeps its sessions and delivers stanzas; this library
//! keeps, per account, the sessions the host registered and the routing
//! state, and answers which sessions get a message sent to the bare JID,
//! plus the XEP-0354 IQs and disco features. [`Router`] is the safe Rust
//! API; [`ffi`] wraps it in a C ABI (`include/cmr.h`).

pub mod algorithm;
pub mod error;
pub mod ffi;
pub mod policy;
pub mod protocol;
pub mod registry;
pub mod router;

pub use algorithm::{Algorithm, Pick};
pub use error::Error;
pub use policy::{Hints, Policy};
pub use registry::{Registration, Show};
pub use router::{IqAnswer, Message, ResourceStats, Router};
