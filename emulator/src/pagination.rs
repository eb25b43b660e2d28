//! Opaque `nextToken` pagination for the four List operations.
//!
//! A token names the sort key of the last item of the page it ends, not an offset: an item deleted
//! between two pages (the rotator deletes while listing) then shifts nothing, and every item still
//! present is returned exactly once. The token is base64url of `<key>\n<checksum>`, where the
//! checksum (FNV-1a 64) also covers the list it belongs to (operation, workspace, service account,
//! filters): a garbled token, or one from another list, is refused with a ValidationException.

use crate::errors::{AwsError, FieldError, ValidationReason};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// One page of items and the token for the next one, if any.
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_token: Option<String>,
}

/// Cuts a page out of `items`, which must be sorted by `key` ascending with unique keys.
/// `scope` names the list the token belongs to.
pub fn paginate<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> String,
    scope: &str,
    page_size: usize,
    next_token: Option<&str>,
) -> Result<Page<T>, AwsError> {
    let after = match next_token {
        Some(token) => Some(decode(scope, token)?),
        None => None,
    };
    let mut rest: Vec<T> = match &after {
        Some(after) => items.into_iter().filter(|i| key(i) > *after).collect(),
        None => items,
    };
    let more = rest.len() > page_size;
    rest.truncate(page_size);
    let next_token = if more {
        rest.last().map(|last| encode(scope, &key(last)))
    } else {
        None
    };
    Ok(Page {
        items: rest,
        next_token,
    })
}

/// A sort key for numeric IDs, so that string order is numeric order.
pub fn numeric_key(id: &str) -> String {
    match id.parse::<u64>() {
        Ok(n) => format!("{n:020}"),
        Err(_) => id.to_string(),
    }
}

fn encode(scope: &str, key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{key}\n{:016x}", checksum(scope, key)))
}

fn decode(scope: &str, token: &str) -> Result<String, AwsError> {
    let invalid = || AwsError::Validation {
        message: "The nextToken is not valid for this request.".to_string(),
        reason: ValidationReason::FieldValidationFailed,
        fields: vec![FieldError {
            name: "nextToken".to_string(),
            message: "Invalid pagination token".to_string(),
        }],
    };
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (key, sum) = text.rsplit_once('\n').ok_or_else(invalid)?;
    if sum != format!("{:016x}", checksum(scope, key)) {
        return Err(invalid());
    }
    Ok(key.to_string())
}

/// FNV-1a, 64 bits: enough to tell a token of this emulator from garbage.
fn checksum(scope: &str, key: &str) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for b in scope.bytes().chain([0u8]).chain(key.bytes()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: u32) -> Vec<String> {
        (1..=n).map(|i| numeric_key(&i.to_string())).collect()
    }

    #[test]
    fn walks_every_item_once() {
        let mut seen = Vec::new();
        let mut token = None;
        loop {
            let page = paginate(keys(7), |k| k.clone(), "s", 3, token.as_deref()).unwrap();
            seen.extend(page.items);
            match page.next_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        assert_eq!(seen, keys(7));
    }

    #[test]
    fn a_deleted_item_shifts_nothing() {
        let first = paginate(keys(6), |k| k.clone(), "s", 2, None).unwrap();
        let mut remaining = keys(6);
        remaining.remove(0); // delete an item already returned
        let second = paginate(
            remaining,
            |k| k.clone(),
            "s",
            2,
            first.next_token.as_deref(),
        )
        .unwrap();
        assert_eq!(second.items, vec![numeric_key("3"), numeric_key("4")]);
    }

    #[test]
    fn exact_fit_has_no_next_token() {
        let page = paginate(keys(3), |k| k.clone(), "s", 3, None).unwrap();
        assert_eq!(page.items.len(), 3);
        assert!(page.next_token.is_none());
    }

    #[test]
    fn refuses_garbage_and_foreign_tokens() {
        let page = paginate(keys(5), |k| k.clone(), "list-a", 2, None).unwrap();
        let token = page.next_token.unwrap();
        assert!(paginate(keys(5), |k| k.clone(), "list-b", 2, Some(&token)).is_err());
        assert!(paginate(keys(5), |k| k.clone(), "list-a", 2, Some("garbage!")).is_err());
        assert!(paginate(keys(5), |k| k.clone(), "list-a", 2, Some(&token)).is_ok());
    }
}
