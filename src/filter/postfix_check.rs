//! `meshmail check-config` for the sidecar: reads Postfix's own configuration (`postconf`)
//! and reports what would loop or lose mail: a reinjection service that is filtered again
//! (every message through meshmail forever, until `hopcount_limit` bounces it), no service at
//! the `reinject` address, aliases expanded after the filter, a size limit that refuses the
//! larger encrypted copy, XFORWARD not allowed from meshmail.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

/// Encryption grows a message by about this much (base64 armour, headers, key packets).
const GROWTH: f64 = 1.4;

/// Problems in the Postfix configuration at `dir` for a filter reinjecting into `reinject`.
pub fn problems(dir: &Path, reinject: &str, aliases_expanded: bool) -> Vec<String> {
    let services = match postconf(dir, &["-P"]) {
        Ok(s) => s,
        Err(e) => return vec![e],
    };
    let main = match postconf(dir, &[]) {
        Ok(s) => s,
        Err(e) => return vec![e],
    };
    check(&main, &services, reinject, aliases_expanded)
}

fn postconf(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("postconf")
        .arg("-c")
        .arg(dir)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run postconf: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "postconf -c {}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `name = value` lines as a map.
fn settings(text: &str) -> HashMap<&str, &str> {
    text.lines()
        .filter_map(|l| {
            l.split_once(" = ")
                .or_else(|| l.strip_suffix(" =").map(|n| (n, "")))
        })
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect()
}

/// The checks, on `postconf` output (`main`) and `postconf -P` output (`services`).
pub fn check(main: &str, services: &str, reinject: &str, aliases_expanded: bool) -> Vec<String> {
    let main = settings(main);
    let overrides = settings(services);
    let port = reinject.rsplit_once(':').map_or(reinject, |(_, p)| p);
    // `postconf -P` names a service `name/type/parameter`.
    let service = overrides
        .keys()
        .filter_map(|k| k.rsplit_once("/inet/").map(|(name, _)| name))
        .find(|name| {
            *name == reinject
                || *name == port
                || name.rsplit_once(':').is_some_and(|(_, p)| p == port)
        });
    let Some(service) = service else {
        return vec![format!(
            "no Postfix service with its own settings listens on {reinject}: add the reinjection listener of config/postfix-master.cf (with an empty content_filter)"
        )];
    };
    let get = |name: &str| -> &str {
        overrides
            .get(format!("{service}/inet/{name}").as_str())
            .or_else(|| main.get(name))
            .copied()
            .unwrap_or("")
    };
    let mut out = Vec::new();
    let filter = get("content_filter");
    if !filter.is_empty() {
        out.push(format!(
            "the reinjection service {service} has content_filter = {filter}: mail would come back to meshmail again and again; set -o content_filter= on it"
        ));
    }
    let overrides_opts = get("receive_override_options");
    if aliases_expanded && !overrides_opts.contains("no_address_mappings") {
        out.push(format!(
            "aliases_expanded is on but the reinjection service {service} expands aliases again (add no_address_mappings to its receive_override_options)"
        ));
    }
    if get("smtpd_authorized_xforward_hosts").is_empty() {
        out.push(format!(
            "the reinjection service {service} does not allow XFORWARD (smtpd_authorized_xforward_hosts): the original client would be lost"
        ));
    }
    let entry: u64 = main
        .get("message_size_limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_240_000);
    let reinjection: u64 = get("message_size_limit").parse().unwrap_or(entry);
    if reinjection != 0 && (reinjection as f64) < entry as f64 * GROWTH {
        out.push(format!(
            "the reinjection service {service} takes at most {reinjection} bytes, but the entry takes {entry}: an encrypted copy (about {GROWTH}x) would be refused; raise its message_size_limit (and its cleanup's)"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::check;

    const MAIN: &str = "message_size_limit = 10240000\ncontent_filter =\n";
    const GOOD: &str = "127.0.0.1:10026/inet/content_filter =\n127.0.0.1:10026/inet/receive_override_options = no_unknown_recipient_checks,no_address_mappings\n127.0.0.1:10026/inet/smtpd_authorized_xforward_hosts = 127.0.0.0/8\n127.0.0.1:10026/inet/message_size_limit = 20480000\n";

    #[test]
    fn a_good_reinjection_service_passes() {
        assert!(check(MAIN, GOOD, "127.0.0.1:10026", true).is_empty());
    }

    #[test]
    fn a_filtered_reinjection_port_is_a_loop() {
        let looped = GOOD.replace(
            "content_filter =",
            "content_filter = meshfilter:inet:127.0.0.1:10025",
        );
        let p = check(MAIN, &looped, "127.0.0.1:10026", true);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("again and again"));
        // Filtered through main.cf, with no override on the service.
        let no_override = GOOD.replace("127.0.0.1:10026/inet/content_filter =\n", "");
        let p = check(
            "content_filter = meshfilter:x\n",
            &no_override,
            "127.0.0.1:10026",
            true,
        );
        assert!(p.iter().any(|m| m.contains("again and again")), "{p:?}");
    }

    #[test]
    fn missing_service_aliases_xforward_and_size_are_reported() {
        assert!(check(MAIN, GOOD, "127.0.0.1:10099", true)[0].contains("no Postfix service"));
        let bare = "127.0.0.1:10026/inet/content_filter =\n";
        let p = check(MAIN, bare, "127.0.0.1:10026", true);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(check(MAIN, bare, "127.0.0.1:10026", false).len() == 2);
    }
}
