use super::*;

#[test]
fn counters_get_their_total_suffix_in_the_classic_format() {
    let om =
        "# HELP r_x Things.\n# TYPE r_x counter\nr_x_total{a=\"1\"} 2\n# HELP r_g G.\n# TYPE r_g gauge\nr_g 1\n# EOF\n";
    let text = openmetrics_to_prometheus_text(om);
    assert_eq!(text, "# HELP r_x_total Things.\n# TYPE r_x_total counter\nr_x_total{a=\"1\"} 2\n# HELP r_g G.\n# TYPE r_g gauge\nr_g 1\n");
}

#[test]
fn a_refresh_replaces_series_in_place_and_drops_stale_ones() {
    let mut registry = Registry::default();
    let (a, b) = (Family::<RouteLabels, Gauge>::default(), Family::<RouteLabels, Gauge>::default());
    registry.register("a", "A", a.clone());
    registry.register("b", "B", b.clone());
    let labels = |name: &str| RouteLabels { route: Name(Arc::from(name)) };
    let series = GaugeSeries::default();
    let set = |names: &[&str]| {
        names
            .iter()
            .map(|n| {
                a.get_or_create(&labels(n)).set(1);
                b.get_or_create(&labels(n)).set(2);
                labels(n)
            })
            .collect()
    };
    series.refresh(&[&a, &b], || set(&["kept", "gone"]));
    series.refresh(&[&a, &b], || set(&["kept", "new"]));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for family in ["a", "b"] {
        for (route, present) in [("kept", true), ("new", true), ("gone", false)] {
            let line = format!("{family}{{route=\"{route}\"}}");
            assert_eq!(text.contains(&line), present, "{line} in:\n{text}");
        }
    }
}

#[test]
fn prometheus_asks_for_openmetrics() {
    let prom = http::HeaderValue::from_static(
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    );
    assert!(wants_openmetrics(Some(&prom)));
    assert!(!wants_openmetrics(Some(&http::HeaderValue::from_static("*/*"))));
    assert!(!wants_openmetrics(None));
}

#[test]
fn label_values_are_escaped_so_one_odd_name_cannot_break_the_scrape() {
    let mut registry = Registry::default();
    let family = Family::<RouteLabels, Gauge>::default();
    registry.register("r", "R", family.clone());
    family.get_or_create(&RouteLabels { route: Name(Arc::from("we\"ird\\na\nme")) }).set(1);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("r{route=\"we\\\"ird\\\\na\\nme\"} 1\n"), "{text}");
}
