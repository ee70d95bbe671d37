//! How an error reads on one line, the same way in both command lines and in the
//! messages the library builds from foreign errors (reqwest's, oci-client's).

use std::error::Error;

/// `err` and its causes on one line, joined by `": "`, each cause once: a cause whose
/// text its parents already quote (library errors include their source in their own
/// message) is left out, and so is an empty one; a cause that begins with what its
/// parent ends with ("loading F" and "F: not found") says it once.
pub fn chain(err: &dyn Error) -> String {
    let mut text = String::new();
    let mut next = Some(err);
    while let Some(cause) = next {
        let whole = cause.to_string();
        let part = match whole.split_once(": ") {
            Some((head, rest)) if !head.is_empty() && text.ends_with(head) => rest.to_owned(),
            _ => whole,
        };
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
        next = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{text}")]
    struct Layer {
        text: String,
        #[source]
        source: Option<Box<Layer>>,
    }

    fn layers(texts: &[&str]) -> Layer {
        texts
            .iter()
            .rev()
            .fold(None, |source: Option<Layer>, text| {
                Some(Layer { text: (*text).to_owned(), source: source.map(Box::new) })
            })
            .expect("at least one layer")
    }

    #[test]
    fn joins_causes_with_colons() {
        assert_eq!(chain(&layers(&["pulling x", "connecting", "refused"])), "pulling x: connecting: refused");
    }

    #[test]
    fn a_cause_its_parent_quotes_appears_once() {
        assert_eq!(chain(&layers(&["reading a: denied", "denied"])), "reading a: denied");
        assert_eq!(chain(&layers(&["outer", "outer: inner", "inner"])), "outer: inner");
    }

    #[test]
    fn a_name_the_parent_ends_with_is_said_once() {
        assert_eq!(chain(&layers(&["loading /x.tar", "/x.tar: no such file"])), "loading /x.tar: no such file");
        assert_eq!(chain(&layers(&["loading /x.tar", "/y.tar: no such file"])), "loading /x.tar: /y.tar: no such file");
    }

    #[test]
    fn empty_messages_add_no_separator() {
        assert_eq!(chain(&layers(&["", "cause"])), "cause");
        assert_eq!(chain(&layers(&["top", ""])), "top");
    }
}
