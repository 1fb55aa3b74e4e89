// A test that tools/gaie/probe.sh drops into GAIE v1.5.0's metrics extractor package
// (pkg/epp/framework/plugins/datalayer/extractor/metrics): the endpoint picker's own parser
// and extractor, with its default (vLLM) mapping, read a Modelyard pod's /metrics text from
// the file MODELYARD_METRICS_FILE names, and the metrics the picker would score on are
// printed as one JSON line after "MODELYARD_METRICS ".
package metrics

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	fwkdl "sigs.k8s.io/gateway-api-inference-extension/pkg/epp/framework/interface/datalayer"
	sourcemetrics "sigs.k8s.io/gateway-api-inference-extension/pkg/epp/framework/plugins/datalayer/source/metrics"
)

func TestModelyardProbe(t *testing.T) {
	f, err := os.Open(os.Getenv("MODELYARD_METRICS_FILE"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	parser := expfmt.NewTextParser(model.LegacyValidation) // as the picker's metrics source parses
	families, err := parser.TextToMetricFamilies(f)
	if err != nil {
		t.Fatalf("the picker cannot parse the text: %v", err)
	}
	registry := NewMappingRegistry()
	mapping, err := NewMapping(defaultTotalQueuedRequestsMetric, defaultTotalRunningRequestsMetric,
		defaultKvCacheUsagePercentageMetric, defaultLoraInfoMetric, defaultCacheInfoMetric)
	if err != nil {
		t.Fatal(err)
	}
	if err := registry.Register(DefaultEngineType, mapping); err != nil {
		t.Fatal(err)
	}
	extractor, err := NewCoreMetricsExtractor(registry, "")
	if err != nil {
		t.Fatal(err)
	}
	endpoint := fwkdl.NewEndpoint(nil, nil) // no labels: the default engine type (vLLM's names)
	if err := extractor.Extract(context.Background(), sourcemetrics.PrometheusMetricMap(families), endpoint); err != nil {
		t.Fatalf("the picker's extractor: %v", err)
	}
	out, err := json.Marshal(endpoint.GetMetrics())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("MODELYARD_METRICS %s\n", out)
}
