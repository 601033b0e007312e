//! `mask_sweep.png`, after the paper's Figure 2: held-out exact match and held-out loss against the
//! mask ratio, mean ± std over seeds for each masking method, SFT as a horizontal band (mean ±
//! std); a third panel shows mask stability against the ratio where it was measured.

use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;

use crate::aggregate::Aggregate;
use crate::plot::{draw_legend, err, fonts, legend_mark, COLORS};
use crate::stats::Spread;

type Pick = fn(&Aggregate) -> Option<Spread>;

/// (title, y label, scale, the value of an aggregate) for each panel.
const PANELS: [(&str, &str, f64, Pick); 3] = [
    ("held-out exact match", "exact match (%)", 100.0, |a| {
        Some(a.exact_match)
    }),
    ("held-out loss", "loss", 1.0, |a| Some(a.heldout_loss)),
    (
        "mask stability (kept at t and t-1, over kept at t)",
        "stability",
        1.0,
        |a| a.mask_stability,
    ),
];

pub fn sweep_plot(path: &Path, aggregates: &[Aggregate]) -> Result<()> {
    fonts();
    let methods: Vec<&str> =
        aggregates
            .iter()
            .filter(|a| masks_name(&a.method))
            .fold(Vec::new(), |mut v, a| {
                if !v.contains(&a.method.as_str()) {
                    v.push(&a.method);
                }
                v
            });
    let sft = aggregates.iter().find(|a| a.method == "sft");
    let panels: Vec<_> = PANELS
        .iter()
        .filter(|(_, _, _, pick)| {
            aggregates
                .iter()
                .any(|a| pick(a).is_some() && masks_name(&a.method))
        })
        .collect();
    let root = BitMapBackend::new(path, (900, 340 * panels.len() as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    for (area, (title, y_desc, scale, pick)) in
        root.split_evenly((panels.len(), 1)).iter().zip(panels)
    {
        let band = sft.and_then(pick).map(|s| {
            let std = s.std.unwrap_or(0.0);
            (
                (s.mean - std) * scale,
                s.mean * scale,
                (s.mean + std) * scale,
            )
        });
        let points: Vec<(f64, f64, f64, f64)> = aggregates
            .iter()
            .filter(|a| masks_name(&a.method))
            .filter_map(|a| bar(a, *pick, *scale))
            .collect();
        let ys = points
            .iter()
            .flat_map(|p| [p.1, p.3])
            .chain(band.iter().flat_map(|b| [b.0, b.2]));
        let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| {
            (lo.min(y), hi.max(y))
        });
        let pad = ((hi - lo) * 0.08).max(1e-3 * scale);
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("{title} vs mask ratio (mean ± std over seeds)"),
                ("sans-serif", 18),
            )
            .margin(10)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..1.0, (lo - pad)..(hi + pad))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("mask ratio")
            .y_desc(*y_desc)
            .draw()
            .map_err(err)?;
        if let Some((low, mean, high)) = band {
            let gray = COLORS[7];
            chart
                .draw_series([Rectangle::new(
                    [(0.0, low), (1.0, high)],
                    gray.mix(0.25).filled(),
                )])
                .map_err(err)?;
            chart
                .draw_series(LineSeries::new(
                    [(0.0, mean), (1.0, mean)],
                    gray.stroke_width(2),
                ))
                .map_err(err)?
                .label("sft (band: ± std)")
                .legend(legend_mark(gray));
        }
        for (i, method) in methods.iter().enumerate() {
            let color = COLORS[i % 7];
            let mut mine: Vec<(f64, f64, f64, f64)> = aggregates
                .iter()
                .filter(|a| a.method == *method)
                .filter_map(|a| bar(a, *pick, *scale))
                .collect();
            mine.sort_by(|a, b| a.0.total_cmp(&b.0));
            if mine.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(
                    mine.iter().map(|p| (p.0, p.2)),
                    color.stroke_width(2),
                ))
                .map_err(err)?
                .label(*method)
                .legend(legend_mark(color));
            // Error bars: a vertical stroke from mean - std to mean + std, with caps.
            let cap = 0.008;
            let strokes = mine.iter().flat_map(|&(x, low, _, high)| {
                [
                    vec![(x, low), (x, high)],
                    vec![(x - cap, low), (x + cap, low)],
                    vec![(x - cap, high), (x + cap, high)],
                ]
            });
            chart
                .draw_series(strokes.map(|p| PathElement::new(p, color.stroke_width(2))))
                .map_err(err)?;
            chart
                .draw_series(
                    mine.iter()
                        .map(|p| Circle::new((p.0, p.2), 3, color.filled())),
                )
                .map_err(err)?;
        }
        draw_legend(&mut chart)?;
    }
    root.present().map_err(err)
}

/// Whether an aggregate's method depends on the mask ratio (a line of the plot, not a band).
fn masks_name(method: &str) -> bool {
    matches!(method, "gmt" | "random" | "oneoff")
}

/// (ratio, mean - std, mean, mean + std) of `a`'s panel value, scaled.
fn bar(a: &Aggregate, pick: Pick, scale: f64) -> Option<(f64, f64, f64, f64)> {
    let s = pick(a)?;
    let std = s.std.unwrap_or(0.0);
    Some((
        a.mask_ratio,
        (s.mean - std) * scale,
        s.mean * scale,
        (s.mean + std) * scale,
    ))
}
