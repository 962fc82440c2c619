//! The routing command (XEP-0050 ad-hoc, XEP-0004 form): what a person
//! sees and submits in a client, built here once so that each host's shim
//! only plugs it into its ad-hoc framework.

use crate::algorithm::Algorithm;
use crate::error::{Error, Quoted};
use crate::protocol::{self, NS};
use jid::BareJid;
use minidom::Element;
use std::ffi::CStr;

/// The XEP-0004 namespace.
pub const NS_DATA: &str = "jabber:x:data";
/// The routing command's node and its name in the server's command list
/// (C strings: the C ABI hands them out as they are).
pub const NODE: &CStr = c"urn:xmpp:cmr:0#routing";
pub const NAME: &CStr = c"Message routing";
/// The var of the algorithm field.
const ALGORITHM: &str = "algorithm";

/// A session of the account as the form shows it.
pub struct SessionShare<'a> {
    pub resource: &'a str,
    pub routed: u64,
}

/// Whether the command goes on (a form to fill) or is done (a note).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandAnswer {
    /// The form to show (`<x xmlns='jabber:x:data' type='form'>`).
    Form(String),
    /// Done: the note's text, and the change to apply when it is one.
    Completed {
        note: String,
        change: Option<(BareJid, Algorithm)>,
    },
    /// Refused: the note's text (an error note); nothing changed.
    Refused(String),
}

fn field(var: &str, kind: &str) -> minidom::element::ElementBuilder {
    Element::builder("field", NS_DATA)
        .attr("var".try_into().unwrap(), var)
        .attr("type".try_into().unwrap(), kind)
}

fn value(text: &str) -> Element {
    Element::builder("value", NS_DATA).append(text).build()
}

/// A name's text (the names are ASCII).
fn text(name: &CStr) -> &str {
    name.to_str().unwrap_or_default()
}

fn text_element(name: &str, text: &str) -> Element {
    Element::builder(name, NS_DATA).append(text).build()
}

/// The offered algorithms as a list's options, labelled for people.
fn options<'a>(offered: &'a [(Algorithm, &str)]) -> impl Iterator<Item = Element> + 'a {
    offered.iter().map(|(algorithm, uri)| {
        Element::builder("option", NS_DATA)
            .attr("label".try_into().unwrap(), algorithm.label())
            .append(value(uri))
            .build()
    })
}

/// One read-only line: a `fixed` field.
fn fixed(text: &str) -> Element {
    Element::builder("field", NS_DATA)
        .attr("type".try_into().unwrap(), "fixed")
        .append(value(text))
        .build()
}

/// The form: the offered algorithms by their labels with `active` chosen,
/// instructions, and each session's share of the messages routed so far.
pub fn form(
    account: &BareJid,
    offered: &[(Algorithm, &str)],
    active: &str,
    users_may_change: bool,
    sessions: &[SessionShare],
) -> Result<String, Error> {
    let mut instructions = format!(
        "Choose how messages sent to {account} (your address without a resource) are \
         spread over your online sessions."
    );
    if !users_may_change {
        instructions.push_str(" The operator of this server does not let users change it.");
    }
    let choice = field(ALGORITHM, "list-single")
        .attr("label".try_into().unwrap(), "Routing")
        .append(value(active))
        .append_all(options(offered))
        .build();
    let total: u64 = sessions.iter().map(|s| s.routed).sum();
    let shares: Vec<Element> = if sessions.is_empty() {
        vec![fixed("No session of yours is online.")]
    } else {
        std::iter::once(fixed(
            "Your online sessions, with the messages routed to each so far:",
        ))
        .chain(sessions.iter().map(|s| {
            let percent = (s.routed * 100).checked_div(total).unwrap_or(0);
            fixed(&format!("{}: {} ({percent}%)", s.resource, s.routed))
        }))
        .collect()
    };
    let form = Element::builder("x", NS_DATA)
        .attr("type".try_into().unwrap(), "form")
        .append(text_element("title", text(NAME)))
        .append(text_element("instructions", &instructions))
        .append(field("FORM_TYPE", "hidden").append(value(NS)).build())
        .append(choice)
        .append_all(shares)
        .build();
    protocol::to_xml(&form)
}

/// The FORM_TYPE of XEP-0133 (service administration) forms.
pub const NS_ADMIN: &str = "http://jabber.org/protocol/admin";
/// The admin command's node and name.
pub const ADMIN_NODE: &CStr = c"urn:xmpp:cmr:0#account-routing";
pub const ADMIN_NAME: &CStr = c"Set an account's message routing";
/// The var of the account field of the admin form (XEP-0133's name).
pub const ACCOUNT: &str = "accountjid";

/// The admin form: the account to set and the offered algorithms by label.
pub fn admin_form(offered: &[(Algorithm, &str)]) -> Result<String, Error> {
    let required = || Element::builder("required", NS_DATA).build();
    let account = field(ACCOUNT, "jid-single")
        .attr("label".try_into().unwrap(), "Account (bare JID)")
        .append(required())
        .build();
    let choice = field(ALGORITHM, "list-single")
        .attr("label".try_into().unwrap(), "Routing")
        .append(required())
        .append_all(options(offered))
        .build();
    let form = Element::builder("x", NS_DATA)
        .attr("type".try_into().unwrap(), "form")
        .append(text_element("title", text(ADMIN_NAME)))
        .append(text_element(
            "instructions",
            "Choose how messages sent to an account's bare JID are spread over its \
             sessions. It applies at once when the account is online, else at its next \
             login; the users' own permission to change it does not limit this command.",
        ))
        .append(field("FORM_TYPE", "hidden").append(value(NS_ADMIN)).build())
        .append(account)
        .append(choice)
        .build();
    protocol::to_xml(&form)
}

/// The values of a submitted form whose FORM_TYPE (if given) is
/// `form_type` and whose fields are `vars`, each once with one value, in
/// that order. Anything else in it (a field the form does not have, a
/// second value, another form type) is refused, naming it: a client
/// submits what the form showed.
pub fn submitted_fields(xml: &str, form_type: &str, vars: &[&str]) -> Result<Vec<String>, Error> {
    let refused = |reason: String| Error::InvalidForm { reason };
    let expected = || {
        let names: Vec<String> = vars.iter().map(|v| Quoted::new(v).to_string()).collect();
        format!(
            "the fields FORM_TYPE and {}, once each with one value",
            names.join(", ")
        )
    };
    let form = protocol::parse_stanza(xml)?;
    if !form.is("x", NS_DATA) || form.attr("type") != Some("submit") {
        return Err(refused("a jabber:x:data form of type submit".into()));
    }
    let mut found: Vec<Option<String>> = vec![None; vars.len()];
    let mut form_type_found = false;
    for child in form.children() {
        if !child.is("field", NS_DATA) {
            return Err(refused(format!("no <{}/> element", child.name())));
        }
        let values: Vec<String> = child
            .children()
            .filter(|v| v.is("value", NS_DATA))
            .map(|v| v.text())
            .collect();
        let slot = child
            .attr("var")
            .and_then(|var| vars.iter().position(|v| *v == var));
        match (child.attr("var"), slot, values.as_slice()) {
            // Fixed lines come back from some clients; they carry nothing.
            (None, _, _) => {}
            (Some("FORM_TYPE"), _, [given]) if given == form_type && !form_type_found => {
                form_type_found = true
            }
            (_, Some(i), [one]) if found[i].is_none() => found[i] = Some(one.clone()),
            (Some(var), _, _) => {
                return Err(refused(format!("{}; not {}", expected(), Quoted::new(var))))
            }
        }
    }
    found
        .into_iter()
        .collect::<Option<Vec<String>>>()
        .ok_or_else(|| refused(expected()))
}

/// What a completed command says of a change: the account and the
/// algorithm's label.
pub fn choice_note(account: &BareJid, algorithm: Algorithm) -> String {
    format!(
        "Messages to {account} are now routed by: {}.",
        algorithm.label()
    )
}

/// The value of `var` (the account or the algorithm) in a submitted admin
/// form, the whole form checked as [`submitted_fields`] does.
pub fn admin_value(xml: &str, var: &str) -> Result<String, Error> {
    let vars = [ACCOUNT, ALGORITHM];
    let Some(i) = vars.iter().position(|v| *v == var) else {
        return Err(Error::InvalidArgument {
            what: "admin form field",
            value: Quoted::new(var),
            expected: "accountjid or algorithm",
        });
    };
    Ok(submitted_fields(xml, NS_ADMIN, &vars)?.swap_remove(i))
}

/// The algorithm URI a submitted routing form asks for.
pub fn submitted_choice(xml: &str) -> Result<String, Error> {
    let mut values = submitted_fields(xml, NS, &[ALGORITHM])?;
    Ok(values.remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_submitted_form_gives_its_one_choice_and_nothing_else() {
        let form = |fields: &str| format!("<x xmlns='jabber:x:data' type='submit'>{fields}</x>");
        let choice = "<field var='algorithm'><value>urn:xmpp:cmr:roundrobin</value></field>";
        let form_type = "<field var='FORM_TYPE'><value>urn:xmpp:cmr:0</value></field>";
        assert_eq!(
            submitted_choice(&form(&format!("{form_type}{choice}"))).unwrap(),
            "urn:xmpp:cmr:roundrobin"
        );
        assert!(
            submitted_choice(&form(choice)).is_ok(),
            "FORM_TYPE may be left out"
        );
        for bad in [
            form(""),
            form(&format!("{choice}{choice}")),
            form(&format!("{form_type}{form_type}{choice}")),
            form("<field var='algorithm'><value>a</value><value>b</value></field>"),
            form(&format!(
                "{choice}<field var='bogus'><value>x</value></field>"
            )),
            form(&format!(
                "<field var='FORM_TYPE'><value>other</value></field>{choice}"
            )),
            choice.replace("<field", "<field xmlns='jabber:x:data'"),
            form(choice).replace("submit", "form"),
            "<x xmlns='jabber:x:data' type='submit'".into(),
        ] {
            assert!(submitted_choice(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_admin_form_asks_for_an_account_and_gives_back_each_value() {
        let form = admin_form(&[(Algorithm::RoundRobin, "urn:xmpp:cmr:roundrobin")]).unwrap();
        for text in [
            "type='jid-single' var='accountjid'",
            "label='Round robin'",
            "http://jabber.org/protocol/admin",
        ] {
            assert!(form.contains(text), "{text} in {form}");
        }
        let submitted = "<x xmlns='jabber:x:data' type='submit'>\
            <field var='FORM_TYPE'><value>http://jabber.org/protocol/admin</value></field>\
            <field var='accountjid'><value>a@x</value></field>\
            <field var='algorithm'><value>roundrobin</value></field></x>";
        assert_eq!(admin_value(submitted, ACCOUNT).unwrap(), "a@x");
        assert_eq!(admin_value(submitted, ALGORITHM).unwrap(), "roundrobin");
        assert!(admin_value(submitted, "FORM_TYPE").is_err());
        let without_account = submitted.replace("accountjid", "bogus");
        let error = admin_value(&without_account, ALGORITHM).unwrap_err();
        assert!(error.to_string().contains("'bogus'"), "{error}");
        let user_form = submitted.replace(NS_ADMIN, NS);
        assert!(admin_value(&user_form, ALGORITHM).is_err());
    }

    #[test]
    fn the_form_labels_each_offered_algorithm_and_shows_the_shares() {
        let account = BareJid::new("a@x").unwrap();
        let offered = [
            (Algorithm::All, "urn:xmpp:cmr:all"),
            (Algorithm::Sticky, "urn:x-cmr:algorithm:sticky"),
        ];
        let sessions = [
            SessionShare {
                resource: "phone",
                routed: 3,
            },
            SessionShare {
                resource: "laptop",
                routed: 1,
            },
        ];
        let xml = form(&account, &offered, "urn:xmpp:cmr:all", false, &sessions).unwrap();
        let parsed = protocol::parse_stanza(&xml).unwrap();
        assert!(parsed.is("x", NS_DATA) && parsed.attr("type") == Some("form"));
        for text in [
            "label='All resources'",
            "label='Same resource per sender'",
            "phone: 3 (75%)",
            "laptop: 1 (25%)",
            "does not let users change it",
            "<value>urn:xmpp:cmr:all</value><option",
        ] {
            assert!(xml.contains(text), "{text} in {xml}");
        }
        let empty = form(&account, &offered, "urn:xmpp:cmr:all", true, &[]).unwrap();
        assert!(empty.contains("No session of yours is online."), "{empty}");
    }
}
