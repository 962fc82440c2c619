//! XEP-0354 wire format (`urn:xmpp:cmr:0`): its elements as Rust types that
//! parse from and build into `minidom` elements, and the IQ envelope.

use crate::error::{Error, Quoted};
use jid::{BareJid, Jid};
use minidom::rxml::error::EndOrError;
use minidom::rxml::{Options, Parse, RawEvent, RawParser, WithOptions};
use minidom::tree_builder::TreeBuilder;
use minidom::Element;

pub const NS: &str = "urn:xmpp:cmr:0";
pub const NS_HINTS: &str = "urn:xmpp:cmr:hints:0";
const NS_CLIENT: &str = "jabber:client";
const NS_SERVER: &str = "jabber:server";
const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// The largest IQ stanza accepted, in bytes. A CMR IQ takes a few hundred.
pub const MAX_IQ_BYTES: usize = 64 * 1024;
/// The deepest element nesting accepted (the stanza is level 1). A CMR IQ
/// is 3 deep; the limit is checked while parsing, before any deeper
/// element is built, so that neither the parse nor the drop of the tree
/// depends on the caller's stack.
pub const MAX_DEPTH: usize = 16;
/// The most attributes accepted on one element (namespace declarations
/// included).
pub const MAX_ATTRIBUTES: usize = 32;
/// The longest name or attribute value accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8192;
/// The most elements accepted in one stanza (a CMR IQ has at most one per
/// algorithm, plus two): building each costs far more than reading text.
pub const MAX_ELEMENTS: usize = 64;
/// How much of the input the parser is given at a time.
const FEED_BYTES: usize = 4096;

/// Why a payload in our namespace is malformed; answered as `<bad-request/>`
/// with this text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub String);

/// Whether the element holds text other than whitespace (a CMR payload
/// holds none).
fn has_text(elem: &Element) -> bool {
    elem.texts().any(|t| !t.trim().is_empty())
}

fn algorithm_attr(elem: &Element) -> Result<String, Malformed> {
    elem.attr("algorithm")
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            Malformed(format!(
                "<{}/> lacks the attribute 'algorithm'",
                elem.name()
            ))
        })
}

/// `<query/>`: empty in a get, carries `<active/>` and `<available/>` in
/// the result.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Query {
    pub active: Option<String>,
    pub available: Vec<String>,
}

impl TryFrom<&Element> for Query {
    type Error = Malformed;

    fn try_from(elem: &Element) -> Result<Query, Malformed> {
        if !elem.is("query", NS) {
            return Err(Malformed(format!(
                "expected <query/>, got {}",
                Quoted::new(elem.name())
            )));
        }
        if has_text(elem) {
            return Err(Malformed("unexpected text in <query/>".into()));
        }
        let mut query = Query::default();
        for child in elem.children() {
            if child.is("active", NS) {
                if query.active.is_some() {
                    return Err(Malformed("more than one <active/>".into()));
                }
                query.active = Some(algorithm_attr(child)?);
            } else if child.is("available", NS) {
                query.available.push(algorithm_attr(child)?);
            } else {
                return Err(Malformed(format!(
                    "unexpected {} in <query/>",
                    Quoted::new(child.name())
                )));
            }
        }
        Ok(query)
    }
}

impl From<&Query> for Element {
    fn from(query: &Query) -> Element {
        let child = |name: &str, algorithm: &str| {
            Element::builder(name, NS)
                .attr("algorithm".try_into().unwrap(), algorithm)
                .build()
        };
        Element::builder("query", NS)
            .append_all(query.active.iter().map(|a| child("active", a)))
            .append_all(query.available.iter().map(|a| child("available", a)))
            .build()
    }
}

/// `<cmr algorithm='...'/>`: the payload of a set, and a message hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmr {
    pub algorithm: String,
}

impl TryFrom<&Element> for Cmr {
    type Error = Malformed;

    fn try_from(elem: &Element) -> Result<Cmr, Malformed> {
        if !elem.is("cmr", NS) {
            return Err(Malformed(format!(
                "expected <cmr/>, got {}",
                Quoted::new(elem.name())
            )));
        }
        if let Some(child) = elem.children().next() {
            return Err(Malformed(format!(
                "unexpected {} in <cmr/>",
                Quoted::new(child.name())
            )));
        }
        if has_text(elem) {
            return Err(Malformed("unexpected text in <cmr/>".into()));
        }
        Ok(Cmr {
            algorithm: algorithm_attr(elem)?,
        })
    }
}

impl From<&Cmr> for Element {
    fn from(cmr: &Cmr) -> Element {
        Element::builder("cmr", NS)
            .attr("algorithm".try_into().unwrap(), cmr.algorithm.as_str())
            .build()
    }
}

/// What a CMR IQ asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Query,
    Set(Cmr),
}

/// The envelope of a CMR IQ, enough to address the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iq {
    pub id: String,
    pub from: Jid,
    pub to: Option<Jid>,
    /// The request, or why it is malformed.
    pub request: Result<Request, Malformed>,
}

impl Iq {
    /// The address that was asked: `to`, or the sender's own account.
    pub fn asked(&self) -> Jid {
        self.to
            .clone()
            .unwrap_or_else(|| Jid::from(self.from.to_bare()))
    }

    /// The account asked about, `None` for the server itself.
    pub fn asked_account(&self) -> Option<BareJid> {
        let asked = self.asked();
        asked.node().is_some().then(|| asked.to_bare())
    }
}

fn parse_jid(what: &'static str, value: &str) -> Result<Jid, Error> {
    Jid::new(value).map_err(|e| Error::InvalidJid {
        what,
        value: Quoted::new(value),
        reason: e.to_string(),
    })
}

fn invalid_xml(reason: impl Into<String>) -> Error {
    Error::InvalidXml {
        reason: reason.into(),
    }
}

/// Parses one whole stanza into a tree, in time linear in its size and
/// within [`MAX_IQ_BYTES`], [`MAX_DEPTH`], [`MAX_ELEMENTS`],
/// [`MAX_ATTRIBUTES`] and [`MAX_TOKEN_BYTES`]. The input
/// must be exactly one element: anything but whitespace after it is an
/// error, as are duplicate attributes (also two prefixes of one namespace
/// with the same name). A missing `xmlns` means
/// `jabber:client`.
pub fn parse_stanza(xml: &str) -> Result<Element, Error> {
    if xml.len() > MAX_IQ_BYTES {
        return Err(invalid_xml(format!(
            "{} bytes; at most {MAX_IQ_BYTES} are accepted",
            xml.len()
        )));
    }
    let mut parser = <RawParser as WithOptions>::with_options(Options {
        max_token_length: MAX_TOKEN_BYTES,
        ..Options::default()
    });
    let mut builder =
        TreeBuilder::new().with_prefixes_stack(vec![Some(NS_CLIENT.to_owned()).into()]);
    // Fed in slices: given all of a long text at once, the lexer looks for
    // its end anew for each chunk it emits, which is quadratic.
    // Whitespace around the stanza is not part of it.
    let xml = xml.trim_start_matches([' ', '\t', '\r', '\n']);
    let mut slices = xml.as_bytes().chunks(FEED_BYTES).peekable();
    let mut input: &[u8] = &[];
    let mut elements = 0;
    let mut depth = 0;
    // The attribute names of the element being opened: few (bounded), so a
    // scan finds a duplicate without allocating per element.
    let mut attributes: Vec<(Option<String>, String)> = Vec::new();
    loop {
        let event = match parser.parse(&mut input, slices.peek().is_none()) {
            Ok(Some(event)) => event,
            Ok(None) => break,
            Err(EndOrError::Error(e)) => return Err(invalid_xml(e.to_string())),
            Err(EndOrError::NeedMoreData) => match slices.next() {
                Some(slice) => {
                    input = slice;
                    continue;
                }
                None => return Err(invalid_xml("the stanza is cut short")),
            },
        };
        match &event {
            RawEvent::ElementHeadOpen(..) => {
                depth += 1;
                elements += 1;
                if depth > MAX_DEPTH {
                    return Err(invalid_xml(format!(
                        "elements nested deeper than {MAX_DEPTH} levels"
                    )));
                }
                if elements > MAX_ELEMENTS {
                    return Err(invalid_xml(format!("more than {MAX_ELEMENTS} elements")));
                }
                attributes.clear();
            }
            RawEvent::Attribute(_, (prefix, name), _) => {
                let key = (prefix.as_ref().map(|p| p.as_str()), name.as_str());
                if attributes
                    .iter()
                    .any(|(p, n)| (p.as_deref(), n.as_str()) == key)
                {
                    return Err(invalid_xml(format!(
                        "attribute {} given twice",
                        Quoted::new(name.as_str())
                    )));
                }
                if attributes.len() == MAX_ATTRIBUTES {
                    return Err(invalid_xml(format!(
                        "more than {MAX_ATTRIBUTES} attributes on one element"
                    )));
                }
                attributes.push((key.0.map(str::to_owned), key.1.to_owned()));
            }
            RawEvent::ElementFoot(_) => depth -= 1,
            _ => {}
        }
        let head_closed = matches!(event, RawEvent::ElementHeadClose(_));
        builder
            .process_event(event)
            .map_err(|e| invalid_xml(e.to_string()))?;
        // Two prefixes bound to one namespace make two names one attribute
        // (XML Namespaces 1.0, 6.3): the builder, keying attributes by
        // namespace and name, then keeps fewer than were given.
        if head_closed {
            let given = attributes
                .iter()
                .filter(|(p, n)| !(p.as_deref() == Some("xmlns") || (p.is_none() && n == "xmlns")))
                .count();
            if let Some(element) = builder.top().filter(|e| e.attrs().len() != given) {
                return Err(invalid_xml(format!(
                    "two attributes of {} have the same namespace and name",
                    Quoted::new(element.name())
                )));
            }
        }
    }
    builder.root.take().ok_or_else(|| invalid_xml("no element"))
}

/// Parses a whole IQ stanza (see [`parse_stanza`] for what is accepted).
/// `Ok(None)`: not a CMR get or set (another namespace, a result or error),
/// for the host to handle.
pub fn parse_iq(xml: &str) -> Result<Option<Iq>, Error> {
    let root = parse_stanza(xml)?;
    if root.name() != "iq" || !(root.has_ns(NS_CLIENT) || root.has_ns(NS_SERVER)) {
        return Ok(None);
    }
    let is_set = match root.attr("type") {
        Some("get") => false,
        Some("set") => true,
        _ => return Ok(None),
    };
    let mut payloads = root.children();
    let Some(payload) = payloads.next() else {
        return Ok(None);
    };
    if !payload.has_ns(NS) {
        return Ok(None);
    }
    let from = root.attr("from").ok_or_else(|| Error::InvalidXml {
        reason: "the IQ has no 'from' (the host must stamp it)".into(),
    })?;
    let id = root.attr("id").ok_or_else(|| Error::InvalidXml {
        reason: "the IQ has no 'id'".into(),
    })?;
    let request = if has_text(&root) {
        Err(Malformed("unexpected text in the IQ".into()))
    } else if let Some(extra) = payloads.next() {
        Err(Malformed(format!(
            "unexpected second payload {}",
            Quoted::new(extra.name())
        )))
    } else if is_set {
        Cmr::try_from(payload).map(Request::Set)
    } else {
        Query::try_from(payload).and_then(|q| match q {
            q if q == Query::default() => Ok(Request::Query),
            _ => Err(Malformed("a query get must be empty".into())),
        })
    };
    Ok(Some(Iq {
        id: id.to_owned(),
        from: parse_jid("from", from)?,
        to: root.attr("to").map(|to| parse_jid("to", to)).transpose()?,
        request,
    }))
}

/// The stanza error conditions this protocol answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    BadRequest,
    Forbidden,
    ItemNotFound,
    NotAllowed,
    UnexpectedRequest,
}

impl Condition {
    fn name_and_type(self) -> (&'static str, &'static str) {
        match self {
            Condition::BadRequest => ("bad-request", "modify"),
            Condition::Forbidden => ("forbidden", "auth"),
            Condition::ItemNotFound => ("item-not-found", "cancel"),
            Condition::NotAllowed => ("not-allowed", "cancel"),
            Condition::UnexpectedRequest => ("unexpected-request", "wait"),
        }
    }
}

fn reply(iq: &Iq, kind: &str) -> minidom::element::ElementBuilder {
    Element::builder("iq", NS_CLIENT)
        .attr("type".try_into().unwrap(), kind)
        .attr("id".try_into().unwrap(), iq.id.as_str())
        .attr("from".try_into().unwrap(), iq.asked().as_str())
        .attr("to".try_into().unwrap(), iq.from.as_str())
}

/// A result IQ, with an optional payload.
pub fn result(iq: &Iq, payload: Option<Element>) -> Element {
    reply(iq, "result").append_all(payload).build()
}

/// An error IQ with `condition` and an optional human-readable text.
pub fn error(iq: &Iq, condition: Condition, text: Option<&str>) -> Element {
    let (name, kind) = condition.name_and_type();
    let text = text.map(|t| Element::builder("text", NS_STANZAS).append(t).build());
    let error = Element::builder("error", NS_CLIENT)
        .attr("type".try_into().unwrap(), kind)
        .append(Element::builder(name, NS_STANZAS).build())
        .append_all(text)
        .build();
    reply(iq, "error").append(error).build()
}

/// Serializes a stanza as the host will send it. Every string in an
/// answer comes from a parsed stanza or a validated policy, so this fails
/// only on a bug; it fails as an error, not a panic.
pub fn to_xml(elem: &Element) -> Result<String, Error> {
    let mut out = Vec::new();
    elem.write_to(&mut out)
        .map_err(|e| invalid_xml(format!("the answer cannot be written: {e}")))?;
    String::from_utf8(out).map_err(|_| invalid_xml("the answer is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Iq {
        parse_iq(xml).unwrap().expect("a CMR IQ")
    }

    // XEP-0354 Example 1, typos corrected: the query of the account's modes.
    const EXAMPLE_1: &str = "<iq type='get' from='juliet@capulet.lit/balcony' id='cmr1'>\
        <query xmlns='urn:xmpp:cmr:0'/></iq>";

    // XEP-0354 Example 2, the answer, with its missing </query> restored.
    const EXAMPLE_2: &str =
        "<iq type='result' to='juliet@capulet.lit/balcony' id='cmr1' xmlns='jabber:client'>\
        <query xmlns='urn:xmpp:cmr:0'>\
        <active algorithm='urn:xmpp:cmr:mostactive'/>\
        <available algorithm='urn:xmpp:cmr:all'/>\
        <available algorithm='urn:xmpp:cmr:mostactive'/>\
        <available algorithm='urn:xmpp:cmr:roundrobin'/>\
        </query></iq>";

    // XEP-0354 Example 3: changing the algorithm.
    const EXAMPLE_3: &str = "<iq type='set' from='juliet@capulet.lit/balcony' id='cmr2'>\
        <cmr xmlns='urn:xmpp:cmr:0' algorithm='urn:xmpp:cmr:roundrobin'/></iq>";

    // XEP-0354 Example 5: a message with a routing hint.
    const EXAMPLE_5: &str =
        "<message from='romeo@montague.lit/orchard' to='juliet@capulet.lit' xmlns='jabber:client'>\
        <body>Wherefore art thou, Romeo?</body>\
        <cmr xmlns='urn:xmpp:cmr:0' algorithm='urn:xmpp:cmr:all'/></message>";

    #[test]
    fn example_1_is_a_query_without_xmlns_on_the_stanza() {
        let iq = parse(EXAMPLE_1);
        assert_eq!(iq.request, Ok(Request::Query));
        assert_eq!(iq.id, "cmr1");
        assert_eq!(iq.asked().as_str(), "juliet@capulet.lit");
    }

    #[test]
    fn example_2_round_trips() {
        let iq: Element = EXAMPLE_2.parse().unwrap();
        let query = Query::try_from(iq.children().next().unwrap()).unwrap();
        assert_eq!(query.active.as_deref(), Some("urn:xmpp:cmr:mostactive"));
        assert_eq!(query.available.len(), 3);
        let rebuilt = Element::from(&query);
        assert_eq!(Query::try_from(&rebuilt).unwrap(), query);
        assert_eq!(&rebuilt, iq.children().next().unwrap());
        // A result is not ours to answer.
        assert_eq!(parse_iq(EXAMPLE_2).unwrap(), None);
    }

    #[test]
    fn example_3_is_a_set() {
        let iq = parse(EXAMPLE_3);
        let cmr = Cmr {
            algorithm: "urn:xmpp:cmr:roundrobin".into(),
        };
        assert_eq!(iq.request, Ok(Request::Set(cmr.clone())));
        assert_eq!(Cmr::try_from(&Element::from(&cmr)).unwrap(), cmr);
    }

    #[test]
    fn example_5_hint_parses() {
        let message: Element = EXAMPLE_5.parse().unwrap();
        let hint = message.get_child("cmr", NS).unwrap();
        assert_eq!(Cmr::try_from(hint).unwrap().algorithm, "urn:xmpp:cmr:all");
    }

    #[test]
    fn malformed_payloads_say_what_is_wrong() {
        let no_attr =
            parse("<iq type='set' from='a@b/c' id='1'><cmr xmlns='urn:xmpp:cmr:0'/></iq>");
        assert_eq!(
            no_attr.request,
            Err(Malformed("<cmr/> lacks the attribute 'algorithm'".into()))
        );
        let wrong = parse(
            "<iq type='get' from='a@b/c' id='1'><cmr xmlns='urn:xmpp:cmr:0' algorithm='x'/></iq>",
        );
        assert!(wrong.request.unwrap_err().0.contains("expected <query/>"));
        let two = parse(
            "<iq type='set' from='a@b/c' id='1'><cmr xmlns='urn:xmpp:cmr:0' algorithm='x'/><x xmlns='y'/></iq>",
        );
        assert!(two.request.unwrap_err().0.contains("second payload"));
        for text in [
            "<iq type='set' from='a@b/c' id='1'><cmr xmlns='urn:xmpp:cmr:0' algorithm='x'>t</cmr></iq>",
            "<iq type='get' from='a@b/c' id='1'><query xmlns='urn:xmpp:cmr:0'>t</query></iq>",
            "<iq type='get' from='a@b/c' id='1'>t<query xmlns='urn:xmpp:cmr:0'/></iq>",
        ] {
            assert!(parse(text).request.unwrap_err().0.contains("unexpected text"), "{text}");
        }
    }

    #[test]
    fn other_stanzas_are_not_ours_and_bad_input_is_an_error() {
        assert_eq!(
            parse_iq("<iq type='get' from='a@b/c' id='1'><query xmlns='jabber:iq:version'/></iq>"),
            Ok(None)
        );
        assert_eq!(
            parse_iq("<iq type='error' from='a@b/c' id='1'><query xmlns='urn:xmpp:cmr:0'/></iq>"),
            Ok(None)
        );
        assert_eq!(parse_iq(EXAMPLE_5), Ok(None));
        assert!(matches!(
            parse_iq("<iq type='get'"),
            Err(Error::InvalidXml { .. })
        ));
        assert!(matches!(
            parse_iq("<iq type='get' id='1'><query xmlns='urn:xmpp:cmr:0'/></iq>"),
            Err(Error::InvalidXml { .. })
        ));
        assert!(matches!(
            parse_iq("<iq type='get' from='@@' id='1'><query xmlns='urn:xmpp:cmr:0'/></iq>"),
            Err(Error::InvalidJid { what: "from", .. })
        ));
    }

    fn invalid_reason(xml: &str) -> String {
        match parse_iq(xml) {
            Err(Error::InvalidXml { reason }) => reason,
            other => panic!("{other:?} for {xml:.80}"),
        }
    }

    fn nested(depth: usize) -> String {
        format!(
            "<iq type='get' from='a@b/c' id='1'><query xmlns='urn:xmpp:cmr:0'>{}{}</query></iq>",
            "<x>".repeat(depth),
            "</x>".repeat(depth)
        )
    }

    #[test]
    fn nesting_is_refused_before_the_tree_is_built_on_any_stack() {
        assert!(parse_iq(&nested(MAX_DEPTH - 2)).is_ok());
        assert!(invalid_reason(&nested(MAX_DEPTH - 1)).contains("deeper than 16"));
        // 9,000 levels (63 KB) crashed a 256 KB stack when the tree was
        // built and dropped; refused at level 17 here, on a 64 KB stack.
        let deep = nested(9_000);
        assert!(deep.len() < MAX_IQ_BYTES);
        let on_small_stack = std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || invalid_reason(&deep))
            .unwrap()
            .join()
            .unwrap();
        assert!(on_small_stack.contains("deeper than"), "{on_small_stack}");
    }

    #[test]
    fn only_one_well_formed_stanza_within_the_limits_is_accepted() {
        let ok = "<iq type='get' from='a@b/c' id='1'><query xmlns='urn:xmpp:cmr:0'/></iq>";
        assert!(
            parse_iq(&format!("{ok}\n  ")).unwrap().is_some(),
            "whitespace after"
        );
        assert!(parse_iq(&format!("<?xml version='1.0'?>{ok}")).is_ok());
        assert!(
            parse_iq(&format!(" \n{ok}")).unwrap().is_some(),
            "whitespace before"
        );
        for (xml, reason) in [
            (format!("{ok}garbage"), ""),
            (format!("{ok}<iq/>"), ""),
            (ok.replace("id='1'", "id='1' id='2'"), "given twice"),
            (ok.replace("<query", "<query a='1' a='2'"), "given twice"),
            (
                ok.replace(
                    "<query",
                    "<query xmlns:a='urn:x' xmlns:b='urn:x' a:n='1' b:n='2'",
                ),
                "the same namespace and name",
            ),
            (
                ok.replace("<iq", "<iq xmlns:a='urn:x' xmlns:b='urn:x'")
                    .replace("<query", "<query a:n='1' b:n='2'"),
                "the same namespace and name",
            ),
            (ok.replace("id='1'", "id='&#1;'"), ""),
            (ok.replace("id='1'", "id='\u{1}'"), ""),
            (ok.replace("id='1'", "id='&lol;'"), ""),
            (format!("<!DOCTYPE iq [<!ENTITY lol 'lol'>]>{ok}"), ""),
            (ok.replace("<query", "<!-- hi --><query"), ""),
            (ok.replace("<query", "<?pi x?><query"), ""),
            (ok.replace("<query xmlns=", "<p:query xmlns:q="), ""),
            (ok[..ok.len() - 3].to_owned(), ""),
            (ok.replace("</iq>", ""), ""),
            (format!("{ok}{}", " ".repeat(MAX_IQ_BYTES)), "at most 65536"),
        ] {
            let got = invalid_reason(&xml);
            assert!(got.contains(reason), "{got} for {xml:.100}");
        }
        let siblings = ok.replace(
            "/></iq>",
            &format!(">{}</query></iq>", "<x/>".repeat(MAX_ELEMENTS - 1)),
        );
        assert!(invalid_reason(&siblings).contains("more than 64 elements"));
        // One name in two namespaces, or unprefixed beside prefixed, is no
        // duplicate.
        let distinct = ok.replace(
            "<query",
            "<query xmlns:a='urn:x' xmlns:b='urn:y' a:n='1' b:n='2' n='3'",
        );
        assert!(parse_iq(&distinct).unwrap().is_some());
        let attributes: String = (0..=MAX_ATTRIBUTES).map(|i| format!(" a{i}='x'")).collect();
        let many = ok.replace("<query", &format!("<query{attributes}"));
        assert!(invalid_reason(&many).contains("more than 32 attributes"));
    }

    #[test]
    fn errors_carry_condition_type_and_text() {
        let iq = parse(EXAMPLE_3);
        let xml = to_xml(&error(
            &iq,
            Condition::NotAllowed,
            Some("fixed by the operator"),
        ))
        .unwrap();
        let back: Element = xml.parse().unwrap();
        assert_eq!(back.attr("type"), Some("error"));
        assert_eq!(back.attr("to"), Some("juliet@capulet.lit/balcony"));
        assert_eq!(back.attr("from"), Some("juliet@capulet.lit"));
        let err = back.get_child("error", NS_CLIENT).unwrap();
        assert_eq!(err.attr("type"), Some("cancel"));
        assert!(err.has_child("not-allowed", NS_STANZAS));
        assert_eq!(
            err.get_child("text", NS_STANZAS).unwrap().text(),
            "fixed by the operator"
        );
    }
}
