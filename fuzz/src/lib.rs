//! What the fuzz targets run, through the C ABI as a host calls it. Each
//! function panics on what must never happen; everything else is an
//! answer or an error status. `cargo test` in the main crate feeds the kept
//! corpus (fuzz/corpus/<target>/) to these same functions.

use arbitrary::{Arbitrary, Unstructured};
use cmr::ffi::*;
use std::ffi::c_char;

fn text(s: &[u8]) -> (*const c_char, usize) {
    (s.as_ptr().cast(), s.len())
}

/// A router freed on drop.
struct Router(*mut cmr_router);

impl Router {
    fn new(options: &[u8]) -> Result<Router, cmr_status> {
        let mut router = std::ptr::null_mut();
        let (p, l) = text(options);
        match unsafe { cmr_router_new(p, l, &mut router) } {
            cmr_status::Ok => Ok(Router(router)),
            status => Err(status),
        }
    }

    fn register(
        &self,
        jid: &[u8],
        token: u64,
        priority: i32,
        show: &[u8],
        available: bool,
    ) -> cmr_status {
        let (j, jl) = text(jid);
        let (s, sl) = text(show);
        let mut new_account = false;
        unsafe {
            cmr_router_register(
                self.0,
                j,
                jl,
                token,
                priority,
                s,
                sl,
                available,
                &mut new_account,
            )
        }
    }

    /// Calls an export that writes text into a buffer of `cap` bytes, and
    /// checks the contract: too small gives the size needed, which then fits.
    fn text_call(
        &self,
        cap: usize,
        mut call: impl FnMut(*mut c_char, usize, &mut usize) -> cmr_status,
    ) -> (cmr_status, Vec<u8>) {
        let mut buf = vec![0u8; cap];
        let mut len = 0;
        let status = call(buf.as_mut_ptr().cast(), cap, &mut len);
        if status == cmr_status::BufferTooSmall {
            assert!(len > cap, "too small for {len} in {cap}");
            buf = vec![0u8; len];
            let needed = len;
            let again = call(buf.as_mut_ptr().cast(), needed, &mut len);
            assert_ne!(
                again,
                cmr_status::BufferTooSmall,
                "{needed} bytes still too small"
            );
            return (again, buf[..len.min(needed)].to_vec());
        }
        buf.truncate(if status == cmr_status::Ok { len } else { 0 });
        (status, buf)
    }

    fn handle_iq(&self, xml: &[u8], cap: usize) -> (cmr_status, Vec<u8>, bool) {
        let (x, xl) = text(xml);
        let mut changed = false;
        let (status, answer) = self.text_call(cap, |buf, cap, len| unsafe {
            cmr_router_handle_iq(self.0, x, xl, buf, cap, len, &mut changed)
        });
        (status, answer, changed)
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        unsafe { cmr_router_free(self.0) }
    }
}

/// An answer the host will send: one IQ, result or error, that parses.
fn check_answer(answer: &[u8]) {
    let xml = std::str::from_utf8(answer).expect("answers are UTF-8");
    let iq = cmr::parse_stanza(xml).unwrap_or_else(|e| panic!("answer does not parse: {e}: {xml}"));
    assert_eq!(iq.name(), "iq");
    assert!(matches!(iq.attr("type"), Some("result" | "error")), "{xml}");
}

const ACCOUNT: &[u8] = b"juliet@capulet.lit/balcony";

/// Any bytes as an IQ: an answer that parses, or an error status.
pub fn iq(data: &[u8]) {
    let router = Router::new(b"hints=any").unwrap();
    assert_eq!(router.register(ACCOUNT, 1, 0, b"", true), cmr_status::Ok);
    let (status, answer, changed) = router.handle_iq(data, 512);
    match status {
        cmr_status::Ok => check_answer(&answer),
        cmr_status::NotMine
        | cmr_status::InvalidXml
        | cmr_status::InvalidJid
        | cmr_status::InvalidUtf8 => {
            assert!(!changed)
        }
        other => panic!("handle_iq gave {other:?}"),
    }
}

/// Any bytes as a policy: a router whose answers all parse, or an
/// option error.
pub fn options(data: &[u8]) {
    let router = match Router::new(data) {
        Ok(router) => router,
        Err(cmr_status::InvalidOption | cmr_status::InvalidUtf8) => return,
        Err(other) => panic!("cmr_router_new gave {other:?}"),
    };
    assert_eq!(router.register(ACCOUNT, 1, 0, b"", true), cmr_status::Ok);
    for xml in [
        &b"<iq type='get' from='juliet@capulet.lit/balcony' id='q'><query xmlns='urn:xmpp:cmr:0'/></iq>"[..],
        b"<iq type='get' from='romeo@montague.lit/x' to='capulet.lit' id='d'><query xmlns='urn:xmpp:cmr:0'/></iq>",
        b"<iq type='set' from='juliet@capulet.lit/balcony' id='s'><cmr xmlns='urn:xmpp:cmr:0' algorithm='urn:xmpp:cmr:all'/></iq>",
    ] {
        let (status, answer, _) = router.handle_iq(xml, 64);
        assert_eq!(status, cmr_status::Ok);
        check_answer(&answer);
    }
    let (status, uri) = router.text_call(8, |buf, cap, len| unsafe {
        cmr_router_get_algorithm(
            router.0,
            b"juliet@capulet.lit".as_ptr().cast(),
            18,
            buf,
            cap,
            len,
        )
    });
    assert_eq!(status, cmr_status::Ok);
    assert!(std::str::from_utf8(&uri).is_ok());
    let (status, _) = router.text_call(4, |buf, cap, len| unsafe {
        cmr_router_disco_features(router.0, buf, cap, len)
    });
    assert_eq!(status, cmr_status::Ok);
}

/// A JID, string or name: mostly from a few that make state, sometimes
/// any bytes.
#[derive(Arbitrary, Debug)]
enum Text {
    Known(u8),
    Raw(Vec<u8>),
}

const KNOWN: [&str; 12] = [
    "a@x/1",
    "a@x/2",
    "a@x/3",
    "b@x/1",
    "a@x",
    "b@x",
    "urn:xmpp:cmr:roundrobin",
    "weighted",
    "sticky",
    "chat",
    "away",
    "",
];

impl Text {
    fn bytes(&self) -> &[u8] {
        match self {
            Text::Known(i) => KNOWN[*i as usize % KNOWN.len()].as_bytes(),
            Text::Raw(bytes) => bytes,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Call {
    Register {
        jid: Text,
        token: u8,
        priority: i32,
        show: Text,
        available: bool,
    },
    Unregister {
        jid: Text,
        token: u8,
    },
    Touch {
        jid: Text,
        token: u8,
    },
    SetLoad {
        jid: Text,
        token: u8,
        load: u32,
    },
    Hibernate {
        jid: Text,
        token: u8,
        on: bool,
    },
    SetAlgorithm {
        bare: Text,
        algorithm: Text,
    },
    GetAlgorithm {
        bare: Text,
        cap: u8,
    },
    Pick {
        recipient: Text,
        kind: Text,
        sender: Text,
        hint: Text,
        local: bool,
        cap: u8,
    },
    HandleIq {
        xml: Text,
        cap: u16,
    },
    Stats {
        bare: Text,
        cap: u16,
    },
    Disco {
        cap: u8,
    },
    LastError {
        cap: u16,
    },
}

/// Arbitrary call sequences with arbitrary bytes: no call panics, and
/// every output buffer keeps its contract.
pub fn abi(data: &[u8]) {
    let mut input = Unstructured::new(data);
    let Ok(options) = Text::arbitrary(&mut input) else {
        return;
    };
    let router = match Router::new(options.bytes()) {
        Ok(router) => router,
        Err(_) => Router::new(b"").unwrap(),
    };
    let r = router.0;
    // Unstructured gives defaults once the data is used up: stop there.
    while !input.is_empty() {
        let Ok(call) = Call::arbitrary(&mut input) else {
            return;
        };
        let status = unsafe {
            match &call {
                Call::Register {
                    jid,
                    token,
                    priority,
                    show,
                    available,
                } => router.register(
                    jid.bytes(),
                    u64::from(*token),
                    *priority,
                    show.bytes(),
                    *available,
                ),
                Call::Unregister { jid, token } => {
                    let (j, l) = text(jid.bytes());
                    cmr_router_unregister(r, j, l, u64::from(*token))
                }
                Call::Touch { jid, token } => {
                    let (j, l) = text(jid.bytes());
                    cmr_router_touch(r, j, l, u64::from(*token))
                }
                Call::SetLoad { jid, token, load } => {
                    let (j, l) = text(jid.bytes());
                    cmr_router_set_load(r, j, l, u64::from(*token), *load)
                }
                Call::Hibernate { jid, token, on } => {
                    let (j, l) = text(jid.bytes());
                    cmr_router_set_hibernating(r, j, l, u64::from(*token), *on)
                }
                Call::SetAlgorithm { bare, algorithm } => {
                    let (j, l) = text(bare.bytes());
                    let (a, al) = text(algorithm.bytes());
                    cmr_router_set_algorithm(r, j, l, a, al)
                }
                Call::GetAlgorithm { bare, cap } => {
                    let (j, l) = text(bare.bytes());
                    router
                        .text_call(usize::from(*cap), |buf, cap, len| {
                            cmr_router_get_algorithm(r, j, l, buf, cap, len)
                        })
                        .0
                }
                Call::Pick {
                    recipient,
                    kind,
                    sender,
                    hint,
                    local,
                    cap,
                } => {
                    let message = cmr_message {
                        recipient: text(recipient.bytes()).0,
                        recipient_len: recipient.bytes().len(),
                        message_type: text(kind.bytes()).0,
                        message_type_len: kind.bytes().len(),
                        sender: text(sender.bytes()).0,
                        sender_len: sender.bytes().len(),
                        hint: text(hint.bytes()).0,
                        hint_len: hint.bytes().len(),
                        sender_is_local: *local,
                    };
                    let mut tokens = vec![0u64; usize::from(*cap)];
                    let mut len = 0;
                    let status =
                        cmr_router_pick(r, &message, tokens.as_mut_ptr(), tokens.len(), &mut len);
                    if status == cmr_status::Ok {
                        assert!(len <= tokens.len() && (len > 0));
                    }
                    status
                }
                Call::HandleIq { xml, cap } => {
                    let (status, answer, _) = router.handle_iq(xml.bytes(), usize::from(*cap));
                    if status == cmr_status::Ok {
                        check_answer(&answer);
                    }
                    status
                }
                Call::Stats { bare, cap } => {
                    let (j, l) = text(bare.bytes());
                    router
                        .text_call(usize::from(*cap), |buf, cap, len| {
                            cmr_router_stats(r, j, l, buf, cap, len)
                        })
                        .0
                }
                Call::Disco { cap } => {
                    router
                        .text_call(usize::from(*cap), |buf, cap, len| {
                            cmr_router_disco_features(r, buf, cap, len)
                        })
                        .0
                }
                Call::LastError { cap } => {
                    let mut buf = vec![0u8; usize::from(*cap)];
                    let mut len = 0;
                    match cmr_last_error(buf.as_mut_ptr().cast(), buf.len(), &mut len) {
                        cmr_status::Ok => {
                            assert!(len <= buf.len());
                            assert!(std::str::from_utf8(&buf[..len]).is_ok());
                            assert!(len < 1024, "a message of {len} bytes");
                        }
                        cmr_status::BufferTooSmall => assert!(len > buf.len()),
                        other => panic!("cmr_last_error gave {other:?}"),
                    }
                    cmr_status::Ok
                }
            }
        };
        assert_ne!(status, cmr_status::Panic, "{call:?}");
        assert_ne!(status, cmr_status::NullParameter, "{call:?}");
    }
}

/// The target named `name`, for the corpus replay.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "iq" => iq(data),
        "options" => options(data),
        "abi" => abi(data),
        _ => panic!("no fuzz target {name}"),
    }
}
