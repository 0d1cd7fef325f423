//! Agreement with the independent reference vectors (tests/data, produced by a PyTorch
//! oracle cross-checked against the authors' code): all 11 MCR² cases.

mod common;

use common::{Tensors, manifest, rel, rel_err};
use mcr2::{Membership, Precision, ReferenceLoss};
use ndarray::Array2;

struct Case {
    name: String,
    z: Array2<f64>,
    labels: Vec<usize>,
    k: usize,
    pi: Array2<f64>,
    eps: Precision,
    values: serde_json::Value,
    t: Tensors,
}

fn cases() -> Vec<Case> {
    let m = manifest();
    let list = m["mcr2"].as_array().unwrap();
    assert_eq!(list.len(), 11);
    list.iter()
        .map(|c| {
            let t = Tensors::open(c["file"].as_str().unwrap());
            let z = t.samples_as_rows("Z");
            let labels: Vec<usize> = t.i64("labels").into_iter().map(|l| l as usize).collect();
            let pi = t.samples_as_rows("Pi_soft");
            Case {
                name: c["name"].as_str().unwrap().to_string(),
                z,
                labels,
                k: c["k"].as_u64().unwrap() as usize,
                pi,
                eps: Precision::from_eps(c["eps"].as_f64().unwrap()).unwrap(),
                values: c["values"].clone(),
                t,
            }
        })
        .collect()
}

fn v(c: &Case, path: &[&str]) -> f64 {
    let mut x = &c.values;
    for p in path {
        x = &x[*p];
    }
    x.as_f64().unwrap_or_else(|| panic!("{}: {path:?}", c.name))
}

#[test]
fn rates_f64_match_paper_values() {
    let mut worst: f64 = 0.0;
    for c in cases() {
        let hard = Membership::hard(&c.labels, c.k).unwrap();
        let soft = Membership::soft(c.pi.clone()).unwrap();
        let rh = mcr2::rate_reduction(&c.z, &hard, c.eps).unwrap();
        let rs = mcr2::rate_reduction(&c.z, &soft, c.eps).unwrap();
        let checks = [
            (rh.r, v(&c, &["R"]), "R"),
            (
                mcr2::coding_rate(&c.z, c.eps).unwrap(),
                v(&c, &["R"]),
                "coding_rate",
            ),
            (rh.rc, v(&c, &["paper", "Rc_hard"]), "Rc hard"),
            (rh.delta_r, v(&c, &["paper", "DeltaR_hard"]), "ΔR hard"),
            (rs.r, v(&c, &["R"]), "R (soft call)"),
            (rs.rc, v(&c, &["paper", "Rc_soft"]), "Rc soft"),
            (rs.delta_r, v(&c, &["paper", "DeltaR_soft"]), "ΔR soft"),
            (
                mcr2::class_coding_rate(&c.z, &soft, c.eps).unwrap(),
                v(&c, &["paper", "Rc_soft"]),
                "Rc soft alone",
            ),
        ];
        for (got, want, what) in checks {
            let e = rel(got, want);
            worst = worst.max(e);
            assert!(e < 1e-10, "{}: {what}: {got} vs {want} (rel {e:e})", c.name);
        }
        let sum: f64 = rh.class_terms.iter().sum();
        assert!((sum - rh.rc).abs() < 1e-14 * rh.rc.abs().max(1.0));
    }
    println!("worst relative error of R, Rc, ΔR (f64): {worst:e}");
}

#[test]
fn rates_f32_match_paper_values() {
    let mut worst: f64 = 0.0;
    for c in cases() {
        let z = c.z.mapv(|x| x as f32);
        let hard = Membership::<f32>::hard(&c.labels, c.k).unwrap();
        let soft = Membership::soft(c.pi.mapv(|x| x as f32)).unwrap();
        let rh = mcr2::rate_reduction(&z, &hard, c.eps).unwrap();
        let rs = mcr2::rate_reduction(&z, &soft, c.eps).unwrap();
        for (got, want, what) in [
            (rh.r, v(&c, &["R"]), "R"),
            (rh.rc, v(&c, &["paper", "Rc_hard"]), "Rc hard"),
            (rh.delta_r, v(&c, &["paper", "DeltaR_hard"]), "ΔR hard"),
            (rs.rc, v(&c, &["paper", "Rc_soft"]), "Rc soft"),
            (rs.delta_r, v(&c, &["paper", "DeltaR_soft"]), "ΔR soft"),
        ] {
            // ΔR is a difference of two larger terms: measure its error relative to R
            let scale = if what.starts_with('Δ') {
                v(&c, &["R"])
            } else {
                want
            };
            let e = (got as f64 - want).abs() / scale.abs();
            worst = worst.max(e);
            assert!(e < 1e-4, "{}: {what}: {got} vs {want} (rel {e:e})", c.name);
        }
    }
    println!("worst relative error (f32): {worst:e}");
}

#[test]
fn gradients_match_paper_tensors() {
    let mut worst: f64 = 0.0;
    for c in cases() {
        let hard = Membership::hard(&c.labels, c.k).unwrap();
        let soft = Membership::soft(c.pi.clone()).unwrap();
        let (_, gr) = mcr2::coding_rate_with_grad(&c.z, c.eps).unwrap();
        let (_, grc_h) = mcr2::class_coding_rate_with_grad(&c.z, &hard, c.eps).unwrap();
        let (_, gdr_h) = mcr2::rate_reduction_with_grad(&c.z, &hard, c.eps).unwrap();
        let (_, grc_s) = mcr2::class_coding_rate_with_grad(&c.z, &soft, c.eps).unwrap();
        let (_, gdr_s) = mcr2::rate_reduction_with_grad(&c.z, &soft, c.eps).unwrap();
        for (got, name) in [
            (&gr, "grad_R"),
            (&grc_h, "paper.grad_Rc_hard"),
            (&gdr_h, "paper.grad_DeltaR_hard"),
            (&grc_s, "paper.grad_Rc_soft"),
            (&gdr_s, "paper.grad_DeltaR_soft"),
        ] {
            let want = c.t.samples_as_rows(name);
            let e = rel_err(got, &want);
            worst = worst.max(e);
            assert!(e < 1e-9, "{}: {name}: rel {e:e}", c.name);
        }
    }
    println!("worst relative gradient error (f64): {worst:e}");
}

#[test]
fn f32_gradients_close() {
    for c in cases() {
        let hard = Membership::<f32>::hard(&c.labels, c.k).unwrap();
        let z = c.z.mapv(|x| x as f32);
        let (_, g) = mcr2::rate_reduction_with_grad(&z, &hard, c.eps).unwrap();
        let want = c.t.samples_as_rows("paper.grad_DeltaR_hard");
        let e = rel_err(&g.mapv(f64::from), &want);
        assert!(e < 1e-3, "{}: rel {e:e}", c.name);
    }
}

/// The reference trace offset (1e-8) reproduces the `code` values and gradients.
#[test]
fn reference_loss_with_trace_offset_matches_code_values() {
    let mut worst: f64 = 0.0;
    for c in cases() {
        let loss = ReferenceLoss::new(c.eps, 1.0, 1.0)
            .unwrap()
            .with_trace_offset(ReferenceLoss::REFERENCE_TRACE_OFFSET)
            .unwrap();
        for (m, kind) in [
            (Membership::hard(&c.labels, c.k).unwrap(), "hard"),
            (Membership::soft(c.pi.clone()).unwrap(), "soft"),
        ] {
            let (val, g) = loss.evaluate_with_grad(&c.z, &m).unwrap();
            let want_rc = v(&c, &["code", &format!("Rc_{kind}")]);
            let want_dr = v(&c, &["code", &format!("DeltaR_{kind}")]);
            let e1 = rel(val.rc, want_rc);
            let e2 = rel(-val.loss, want_dr);
            let want_g = c.t.samples_as_rows(&format!("code.grad_DeltaR_{kind}"));
            let e3 = rel_err(&(-g), &want_g);
            worst = worst.max(e1).max(e2).max(e3);
            assert!(
                e1 < 1e-10 && e2 < 1e-10 && e3 < 1e-9,
                "{} {kind}: {e1:e} {e2:e} {e3:e}",
                c.name
            );
            // and the paper convention differs from the code one by more than the tolerance
            // whenever the reference values do
            let paper = v(&c, &["paper", &format!("Rc_{kind}")]);
            if rel(paper, want_rc) > 1e-9 {
                let p = ReferenceLoss::new(c.eps, 1.0, 1.0)
                    .unwrap()
                    .evaluate(&c.z, &m)
                    .unwrap();
                assert!(rel(p.rc, want_rc) > 1e-10);
            }
        }
    }
    println!("worst relative error, code convention: {worst:e}");
}

/// The mcr2 reference preset (its `eps` is ε², γ₁ = γ₂ = 1, trace offset 1e-8) reproduces
/// the `code` values: R, Rc and ΔR with hard and soft memberships.
#[test]
fn mcr2_reference_preset_reproduces_code_values() {
    use mcr2::rate::Convention;
    for c in cases() {
        let preset = Convention::mcr2_reference(c.eps.eps_sq());
        assert_eq!(preset.precision().unwrap(), c.eps);
        let loss = preset.loss().unwrap();
        for (m, kind) in [
            (Membership::hard(&c.labels, c.k).unwrap(), "hard"),
            (Membership::soft(c.pi.clone()).unwrap(), "soft"),
        ] {
            let val = loss.evaluate(&c.z, &m).unwrap();
            let e1 = rel(val.rc, v(&c, &["code", &format!("Rc_{kind}")]));
            let e2 = rel(-val.loss, v(&c, &["code", &format!("DeltaR_{kind}")]));
            assert!(e1 < 1e-10 && e2 < 1e-10, "{} {kind}: {e1:e} {e2:e}", c.name);
        }
        let r = preset.coding_rate(&c.z).unwrap();
        assert!(rel(r, v(&c, &["R"])) < 1e-10, "{}", c.name);
    }
}
