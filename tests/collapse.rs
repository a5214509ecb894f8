//! Chapter 6's page on the collapse (`chapters/06_collapse.md`): the measurements of
//! `examples/06_f16_collapse.rs`, pinned. The tables the chapter shows are the snapshot
//! `snapshots/06_f16_collapse.snap`; the facts its text draws from them are asserted here too,
//! so that a change of the numbers that changes the story fails with a message that says which,
//! and the figures its sentences quote are fragments (`chapters/generated/06_collapse_*.md`).

mod common;

use gpt2_tutorial::tutorial::f16_collapse::{self, CollapseReport, CollapseSettings};

fn report() -> CollapseReport {
    let m = common::bundled();
    let settings = CollapseSettings::default();
    f16_collapse::run(&m.weights, &m.config, &m.tokenizer, &settings).expect("the measurements run")
}

#[test]
fn the_collapse_measurements() {
    let r = report();
    let n = &r.numbers;

    // 1. eps is a subnormal in f16, and squares of gradients below 5.46e-3 vanish.
    assert!(n.eps_f16_is_subnormal && (n.eps_f16 - 1.013e-6).abs() < 1e-9);
    assert!(
        (n.v_underflow_gradient - 5.46e-3).abs() < 1e-5,
        "{}",
        n.v_underflow_gradient
    );
    assert_eq!(n.token_0, "!");
    // An update of the tutorial's last lr (1.16e-6) moves no weight above 3.9e-3.
    assert!((n.largest_weight_moved_f16[1] - 3.9e-3).abs() < 1e-5);

    // 2. The steady gradient: in the tutorial's arithmetic weights with small gradients run
    // away (v stays 0, the step is lr/eps * m), larger ones never move; f32 masters move every
    // weight by about the sum of the learning rates, 1.12e-3.
    let s = &r.steady;
    assert!(s.all_finite);
    for row in &s.rows {
        let [tutorial, half_f32_moments, bf16, f32_eps6, f32_torch] = row.drift[..] else {
            panic!("five variants")
        };
        assert_eq!(
            half_f32_moments, 0.0,
            "f16 weights, f32 moments: every update is lost"
        );
        assert_eq!(bf16, 0.0, "bf16: every update is lost");
        let runs_away = row.gradient >= 1e-4 && row.gradient <= n.v_underflow_gradient;
        if runs_away {
            assert_eq!(row.tutorial_v, 0.0, "g = {}: v stays 0", row.gradient);
            assert!(
                tutorial.abs() > 50.0 * f32_torch.abs(),
                "g = {}: {tutorial}",
                row.gradient
            );
        }
        if row.gradient > n.v_underflow_gradient {
            assert_eq!(tutorial, 0.0, "g = {}: the update is lost", row.gradient);
        }
        if row.gradient >= 1e-4 {
            assert!((f32_eps6 + 1.12e-3).abs() < 2e-5 && (f32_torch + 1.12e-3).abs() < 1e-5);
        }
    }
    let g1e3 = s.rows.iter().find(|r| r.gradient == 1e-3).unwrap();
    assert!((g1e3.drift[0] + 0.93).abs() < 0.01, "{}", g1e3.drift[0]);

    // 3. Nearly every gradient element of the bundled model is in the band where v vanishes.
    let wte = r
        .real
        .groups
        .iter()
        .find(|g| g.name == "wte.weight")
        .unwrap();
    assert!(wte.grad_v_underflows > 0.99, "{}", wte.grad_v_underflows);
    let ln = r
        .real
        .groups
        .iter()
        .find(|g| g.name == "ln_1.weight")
        .unwrap();
    assert_eq!(
        ln.changed,
        vec![0.0; 3],
        "LayerNorm gains of 1.0 never move"
    );

    // 4. Unseen tokens' rows do get a gradient, through the tied head.
    let u = &r.real.unseen;
    assert_eq!(u.unseen_zero_f32, 0.0);
    assert!(u.unseen_zero_f16 < 0.01 && u.unseen_v_underflows_f16 > 0.99);

    // 5. Random weights: small activations, no overflow in f16.
    for a in &r.activations {
        assert_eq!(a.non_finite_f16, 0, "{}", a.model);
        assert!(a.residual_max_f32.iter().all(|x| *x < 10.0), "{}", a.model);
    }

    // The figures chapter 6's collapse page quotes from those tables, as fragments it includes.
    let groups = &r.real.groups;
    let params: usize = groups.iter().map(|g| g.params).sum();
    let share = |f: &dyn Fn(&f16_collapse::GroupRow) -> f64| {
        100.0 * groups.iter().map(|g| f(g) * g.params as f64).sum::<f64>() / params as f64
    };
    let band = share(&|g| g.grad_v_underflows);
    // The second probe learning rate is the tutorial's last, 1.16e-6.
    let changed = share(&|g| g.changed[1]);
    common::fragment("06_collapse_band_percent.md", &format!("{band:.1}"));
    common::fragment(
        "06_collapse_band_percent_wte.md",
        &format!("{:.1}", 100.0 * wte.grad_v_underflows),
    );
    common::fragment("06_collapse_changed_percent.md", &format!("{changed:.1}"));
    common::fragment(
        "06_collapse_first_loss_f16.md",
        &format!("{:.2}", r.real.losses_f16[0]),
    );
    common::fragment(
        "06_collapse_unseen_percent_f16.md",
        &format!("{:.1}", 100.0 * u.unseen_v_underflows_f16),
    );
    common::fragment(
        "06_collapse_unseen_max_f16.md",
        &format!("{:.2e}", u.unseen_max_f16),
    );

    let text = f16_collapse::render(&r);
    common::with_snapshots(|| insta::assert_snapshot!("06_f16_collapse", text));
}
