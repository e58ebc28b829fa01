// Package dashboards holds Herald's Grafana dashboards (overview.json and one
// per service), the Grafana provisioning files, the Prometheus scrape config
// of the local stack (prometheus.yml) and the alert rules (alerts.yml).
//
// Files embeds them so `herald dev --prometheus` can run Prometheus with the
// repository's config from any working directory. The package test starts
// the dev stack and a real Prometheus, drives traffic through every service
// and evaluates every panel and alert expression against it.
package dashboards

import "embed"

// Files holds the dashboards, provisioning files, scrape config and alert rules.
//
//go:embed *.json prometheus.yml alerts.yml provisioning/*.yaml
var Files embed.FS
