//! The report as the tables the chapter shows.

use std::fmt::Write;

use super::{Activations, CollapseReport, GroupRow, PROBE_LRS};

/// A number in three significant digits, exact zeros as `0`.
fn num(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else {
        format!("{x:.2e}")
    }
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// The report as the tables the chapter shows.
pub fn render(r: &CollapseReport) -> String {
    let mut o = String::new();
    let n = &r.numbers;
    let under = num(n.v_underflow_gradient);
    let _ = writeln!(o, "1. The tutorial's numbers in f16");
    let facts = [
        ("largest f16", format!("{}", n.f16_max)),
        ("smallest normal f16", num(n.f16_min_normal)),
        ("smallest subnormal f16", num(n.f16_min_subnormal)),
        (
            "AdamW's eps = 1e-6 in f16",
            format!(
                "{} ({})",
                num(n.eps_f16),
                if n.eps_f16_is_subnormal {
                    "subnormal"
                } else {
                    "normal"
                }
            ),
        ),
        ("AdamW's eps = 1e-6 in bf16", num(n.eps_bf16)),
        (
            "half an f16 step at a weight of 0.02",
            num(n.half_ulp_f16_at_typical),
        ),
        (
            "half a bf16 step at a weight of 0.02",
            num(n.half_ulp_bf16_at_typical),
        ),
    ];
    for (what, value) in facts {
        let _ = writeln!(o, "  {what:<52} {value}");
    }
    for (lr, w) in PROBE_LRS.iter().zip(&n.largest_weight_moved_f16) {
        let what = format!("largest f16 weight an update of {} moves", num(*lr));
        let _ = writeln!(o, "  {what:<52} {}", num(*w));
    }
    let _ = writeln!(
        o,
        "  {:<52} {under}",
        "(1 - beta2) g^2 rounds to 0 in f16 for |g| <="
    );
    let _ = writeln!(o, "  {:<52} {:?}", "token 0 decodes to", n.token_0);

    let s = &r.steady;
    let _ = writeln!(o, "\n2. A weight of {} with a steady gradient g: its change after the tutorial's {} steps (lr 0 -> {})", num(s.initial_weight), s.steps, num(s.last_lr));
    for (i, v) in s.variants.iter().enumerate() {
        let _ = writeln!(o, "  {} = {}", (b'A' + i as u8) as char, v.name);
    }
    let _ = write!(o, "  {:>8}", "g");
    for i in 0..s.variants.len() {
        let _ = write!(o, " {:>10}", (b'A' + i as u8) as char);
    }
    let _ = writeln!(o, " | A: steps moved  v at end  last step");
    for row in &s.rows {
        let _ = write!(o, "  {:>8}", num(row.gradient));
        for d in &row.drift {
            let _ = write!(o, " {:>10}", num(*d));
        }
        let _ = writeln!(
            o,
            " | {:>15} {:>9} {:>10}",
            row.steps_moved[0],
            num(row.tutorial_v),
            num(row.tutorial_last_update)
        );
    }
    let _ = writeln!(o, "  every weight finite at the end: {}", s.all_finite);

    let q = &r.real;
    let losses: Vec<String> = q.losses_f16.iter().map(|l| format!("{l:.2}")).collect();
    let _ = writeln!(o, "\n3. The bundled model in pure f16: gradients summed over {} packed sequences ({} tokens, losses {}), then one tutorial AdamW step", q.sequences, q.tokens, losses.join(", "));
    let lrs: Vec<String> = PROBE_LRS
        .iter()
        .map(|l| format!("{:>9}", num(*l)))
        .collect();
    let (gradient, changed) = ("summed f16 gradient", "changed by one step at lr");
    let _ = writeln!(o, "  {:<30} {gradient:^27} | {changed}", "");
    let _ = writeln!(
        o,
        "  {:<20} {:>9} {:>7} {:>11} {:>7} | {}",
        "tensor (all layers)",
        "params",
        "g = 0",
        format!("|g|<={under}"),
        "above",
        lrs.join("")
    );
    let mut total = GroupRow::empty("all".into());
    for g in &q.groups {
        total.add_counts(g);
    }
    total.counts_to_fractions();
    for g in q.groups.iter().chain([&total]) {
        let changed: Vec<String> = g
            .changed
            .iter()
            .map(|c| format!("{:>9}", pct(*c)))
            .collect();
        let _ = writeln!(
            o,
            "  {:<20} {:>9} {:>7} {:>11} {:>7} | {}",
            g.name,
            g.params,
            pct(g.grad_zero),
            pct(g.grad_v_underflows),
            pct(g.grad_above),
            changed.join("")
        );
    }
    let u = &q.unseen;
    let _ = writeln!(o, "\n4. Rows of wte whose token the sequences never contain ({} of {} tokens are seen): their gradient, through the tied head only", u.seen_tokens, u.vocab);
    let _ = writeln!(
        o,
        "  f16: {} exactly 0, {} in (0, {under}], largest |g| {} (seen rows: {})",
        pct(u.unseen_zero_f16),
        pct(u.unseen_v_underflows_f16),
        num(u.unseen_max_f16),
        num(u.seen_max_f16)
    );
    let _ = writeln!(
        o,
        "  f32: {} exactly 0, largest |g| {}",
        pct(u.unseen_zero_f32),
        num(u.unseen_max_f32)
    );

    let _ = writeln!(o, "\n5. Largest |activation| of the residual stream in f32, on the tutorial's prompt, and the same in f16");
    let _ = write!(o, "  {:<22}", "");
    for a in &r.activations {
        let _ = write!(o, " {:>30}", a.model);
    }
    let _ = writeln!(o);
    let layers = r
        .activations
        .iter()
        .map(|a| a.residual_max_f32.len())
        .max()
        .unwrap_or(0);
    for i in 0..layers {
        let what = if i == 0 {
            "embeddings".to_string()
        } else {
            format!("after block {i}")
        };
        let _ = write!(o, "  {what:<22}");
        for a in &r.activations {
            let _ = write!(
                o,
                " {:>30}",
                a.residual_max_f32.get(i).map_or("-".into(), |x| num(*x))
            );
        }
        let _ = writeln!(o);
    }
    /// A row of the table: its label, and how to print a model's value.
    type Row = (&'static str, fn(&Activations) -> String);
    let rows: [Row; 4] = [
        ("logits, f32", |a| num(a.logits_max_f32)),
        ("logits, f16", |a| num(a.logits_max_f16)),
        ("non-finite in f16", |a| a.non_finite_f16.to_string()),
        ("same top token in f16", |a| {
            format!("{} of {}", a.argmax_agree, a.tokens)
        }),
    ];
    for (what, f) in rows {
        let _ = write!(o, "  {what:<22}");
        for a in &r.activations {
            let _ = write!(o, " {:>30}", f(a));
        }
        let _ = writeln!(o);
    }
    o
}
