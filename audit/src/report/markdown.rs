//! The Markdown format (GitHub-flavoured): headings and tables in the same order
//! as the HTML report, without the charts (the timeline is a table).
//!
//! Every string from a record goes through [`Md`]: `|` and Markdown punctuation
//! are backslash-escaped, `<` and `>` too (no raw HTML reaches a renderer), line
//! breaks become `<br>`, control characters U+FFFD.

use std::fmt::{self, Write};

use super::model::{DualApproval, IdentityEvents, PolicyChanges, Report};
use super::text::{effect_label, external_label, host_port, percent, printable, Count};
use crate::record::Effect;

/// Text from a record, escaped for a Markdown table cell or paragraph.
#[derive(Debug, Clone, Copy)]
pub struct Md<'a>(pub &'a str);

impl fmt::Display for Md<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars().map(printable) {
            match c {
                '\n' => f.write_str("<br>")?,
                '\t' => f.write_char(' ')?,
                '\\' | '|' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '&' | '~' | '#' | '!' => {
                    f.write_char('\\')?;
                    f.write_char(c)?;
                }
                _ => f.write_char(c)?,
            }
        }
        Ok(())
    }
}

const NONE: &str = "_None in this window._\n";

impl Report {
    /// The report as GitHub-flavoured Markdown.
    pub fn to_markdown(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = self.write_markdown(&mut out);
        out
    }

    fn write_markdown(&self, out: &mut String) -> fmt::Result {
        self.md_header(out)?;
        self.md_chain(out)?;
        self.md_totals(out)?;
        self.md_denials(out)?;
        md_dual_approval(out, &self.dual_approval)?;
        self.md_external(out)?;
        md_identity(out, &self.identity)?;
        md_policy(out, &self.policy)?;
        self.md_timeline(out)
    }

    fn md_header(&self, out: &mut String) -> fmt::Result {
        writeln!(out, "# Palisade compliance report\n")?;
        writeln!(out, "| | |\n|---|---|")?;
        writeln!(out, "| Window | {} to {} |", self.since, self.until)?;
        writeln!(out, "| Generated | {} |", self.generated_at)?;
        writeln!(out, "| Database | {} |", Md(&self.database))?;
        match &self.head {
            Some(head) => writeln!(out, "| Head of the chain | seq {}, hash `{}` |", head.seq, head.hash)?,
            None => writeln!(out, "| Head of the chain | the store is empty |")?,
        }
        let totals = &self.totals;
        writeln!(out, "\n## Summary\n")?;
        writeln!(
            out,
            "| Requests | Denials | Dry-run denials | BlackHole | Passthrough | Chain |"
        )?;
        writeln!(out, "|---:|---:|---:|---:|---:|---|")?;
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            Count(totals.requests),
            Count(totals.decisions_with(Effect::Deny)),
            Count(totals.decisions_with(Effect::DryRunDeny)),
            Count(totals.external_of(crate::record::ExternalKind::BlackHole)),
            Count(totals.external_of(crate::record::ExternalKind::Passthrough)),
            if self.chain.is_intact() { "intact" } else { "**BROKEN**" },
        )
    }

    fn md_chain(&self, out: &mut String) -> fmt::Result {
        writeln!(out, "\n## Chain integrity\n")?;
        match &self.chain.broken {
            None => writeln!(
                out,
                "**Intact**: {} records checked, every link holds.",
                Count(self.chain.records)
            ),
            Some(broken) => writeln!(
                out,
                "**BROKEN** at seq {} (record `{}` from {}): {}. {} records checked; nothing after seq {} is proven.",
                broken.seq,
                Md(&broken.record_id),
                Md(&broken.sender),
                Md(&broken.problem),
                Count(self.chain.records),
                broken.seq,
            ),
        }
    }

    fn md_totals(&self, out: &mut String) -> fmt::Result {
        writeln!(out, "\n## Totals\n")?;
        writeln!(out, "{} records in the window.\n", Count(self.totals.records))?;
        writeln!(out, "| Kind | Records |\n|---|---:|")?;
        for (kind, count) in &self.totals.by_kind {
            writeln!(out, "| {kind} | {} |", Count(*count))?;
        }
        writeln!(out, "\n| Side | Allow | Deny | Dry-run deny |\n|---|---:|---:|---:|")?;
        for (side, by_effect) in &self.totals.decisions {
            let n = |effect| Count(by_effect.get(&effect).copied().unwrap_or(0));
            writeln!(
                out,
                "| {side} | {} | {} | {} |",
                n(Effect::Allow),
                n(Effect::Deny),
                n(Effect::DryRunDeny)
            )?;
        }
        Ok(())
    }

    fn md_denials(&self, out: &mut String) -> fmt::Result {
        writeln!(out, "\n## Denials by edge\n")?;
        if self.denials.by_edge.is_empty() {
            out.push_str(NONE);
        } else {
            writeln!(
                out,
                "| Caller (principal) | Destination (resource) | Side | Effect | Decisions |"
            )?;
            writeln!(out, "|---|---|---|---|---:|")?;
        }
        for edge in &self.denials.by_edge {
            writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                Md(&edge.principal),
                Md(&edge.resource),
                edge.side,
                effect_label(edge.effect),
                Count(edge.count)
            )?;
        }
        writeln!(out, "\n## Denials by determining policy\n")?;
        if self.denials.by_policy.is_empty() {
            out.push_str(NONE);
        } else {
            writeln!(out, "| Policy | Side | Effect | Decisions |\n|---|---|---|---:|")?;
        }
        for policy in &self.denials.by_policy {
            let name = if policy.default_deny {
                format!("_{}_", policy.policy)
            } else {
                Md(&policy.policy).to_string()
            };
            let effect = effect_label(policy.effect);
            writeln!(out, "| {name} | {} | {effect} | {} |", policy.side, Count(policy.count))?;
        }
        Ok(())
    }

    fn md_external(&self, out: &mut String) -> fmt::Result {
        writeln!(out, "\n## External traffic\n")?;
        writeln!(out, "| Kind | Events |\n|---|---:|")?;
        for (kind, count) in &self.totals.external {
            writeln!(out, "| {} | {} |", external_label(*kind), Count(*count))?;
        }
        writeln!(out)?;
        if self.external.rows.is_empty() {
            out.push_str(NONE);
        } else {
            writeln!(out, "| Kind | Workload | Destination | Events |\n|---|---|---|---:|")?;
        }
        for row in &self.external.rows {
            writeln!(
                out,
                "| {} | {} | {} | {} |",
                external_label(row.kind),
                Md(&row.workload),
                Md(&host_port(&row.host, row.port)),
                Count(row.count)
            )?;
        }
        Ok(())
    }

    fn md_timeline(&self, out: &mut String) -> fmt::Result {
        writeln!(out, "\n## Decisions over time\n")?;
        if self.timeline.buckets.is_empty() {
            return out.write_str(NONE);
        }
        writeln!(
            out,
            "| Bucket start (UTC) | Allow | Deny | Dry-run deny |\n|---|---:|---:|---:|"
        )?;
        for bucket in &self.timeline.buckets {
            let (allow, deny, dry) = (Count(bucket.allow), Count(bucket.deny), Count(bucket.dry_run_deny));
            writeln!(out, "| {} | {allow} | {deny} | {dry} |", bucket.start)?;
        }
        Ok(())
    }
}

fn md_dual_approval(out: &mut String, dual: &DualApproval) -> fmt::Result {
    writeln!(out, "\n## Dual-approval coverage\n")?;
    writeln!(
        out,
        "{} of {} requests allowed at ingress were also allowed at egress: **{}**. {} lack the egress allow.\n",
        Count(dual.both_allowed),
        Count(dual.ingress_allowed),
        percent(dual.coverage_percent),
        Count(dual.missing_egress()),
    )?;
    if !dual.missing_egress_examples.is_empty() {
        writeln!(out, "Examples of request ids without an egress allow:\n")?;
        for id in &dual.missing_egress_examples {
            writeln!(out, "- {}", Md(id))?;
        }
        writeln!(out)?;
    }
    writeln!(
        out,
        "{} requests were allowed at egress and denied at ingress (one side said no).\n",
        Count(dual.egress_allowed_ingress_denied)
    )?;
    if !dual.one_side_denied.is_empty() {
        writeln!(
            out,
            "| Caller (principal) | Destination (resource) | Requests |\n|---|---|---:|"
        )?;
    }
    for edge in &dual.one_side_denied {
        writeln!(
            out,
            "| {} | {} | {} |",
            Md(&edge.principal),
            Md(&edge.resource),
            Count(edge.requests)
        )?;
    }
    Ok(())
}

fn md_identity(out: &mut String, identity: &IdentityEvents) -> fmt::Result {
    writeln!(out, "\n## Identity events\n")?;
    writeln!(out, "| Kind | Events |\n|---|---:|")?;
    for (kind, count) in &identity.by_kind {
        writeln!(out, "| {kind} | {} |", Count(*count))?;
    }
    writeln!(out, "\nThe last {} events, oldest first:\n", identity.recent.len())?;
    if identity.recent.is_empty() {
        return out.write_str(NONE);
    }
    writeln!(
        out,
        "| Time (UTC) | Kind | SPIFFE ID | Serial | Reason |\n|---|---|---|---|---|"
    )?;
    for event in &identity.recent {
        writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            event.time,
            event.kind,
            Md(&event.spiffe_id),
            Md(&event.serial),
            Md(&event.reason)
        )?;
    }
    Ok(())
}

fn md_policy(out: &mut String, policy: &PolicyChanges) -> fmt::Result {
    writeln!(out, "\n## Policy changes\n")?;
    writeln!(
        out,
        "{} versions published, {} edits rejected.\n",
        Count(policy.accepted_total),
        Count(policy.rejected_total)
    )?;
    writeln!(out, "### Published versions\n")?;
    if policy.accepted.is_empty() {
        out.push_str(NONE);
    } else {
        writeln!(out, "| Time (UTC) | Version | Digest |\n|---|---:|---|")?;
    }
    for accepted in &policy.accepted {
        writeln!(
            out,
            "| {} | {} | {} |",
            accepted.time,
            accepted.version,
            Md(&accepted.digest)
        )?;
    }
    writeln!(out, "\n### Rejected edits\n")?;
    if policy.rejected.is_empty() {
        out.push_str(NONE);
    } else {
        writeln!(out, "| Time (UTC) | Diagnostics (first line) |\n|---|---|")?;
    }
    for rejected in &policy.rejected {
        writeln!(out, "| {} | {} |", rejected.time, Md(&rejected.detail))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Md;

    #[test]
    fn cells_cannot_break_the_table_or_inject_html() {
        assert_eq!(Md("a|b\nc").to_string(), "a\\|b<br>c");
        assert_eq!(Md("<script>").to_string(), "\\<script\\>");
        assert_eq!(Md("[x](javascript:y)").to_string(), "\\[x\\](javascript:y)");
        assert_eq!(Md("payments/payments").to_string(), "payments/payments");
    }
}
