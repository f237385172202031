package deploy

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// Temporal's dynamic config file has Temporal's shape: each key a list of
// values, each with optional constraints of the kinds Temporal knows.
func TestTemporalDynamicConfig(t *testing.T) {
	raw, err := os.ReadFile("temporal/dynamicconfig/production.yaml")
	if err != nil {
		t.Fatal(err)
	}
	type constraints struct {
		Namespace     string `yaml:"namespace"`
		TaskQueueName string `yaml:"taskQueueName"`
		TaskType      string `yaml:"taskType"`
	}
	var cfg map[string][]struct {
		Value       any         `yaml:"value"`
		Constraints constraints `yaml:"constraints"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatalf("dynamic config: %v", err)
	}
	for key, values := range cfg {
		if !strings.Contains(key, ".") || len(values) == 0 {
			t.Errorf("%s: not a Temporal setting with values", key)
		}
		for _, v := range values {
			if v.Value == nil {
				t.Errorf("%s: a value is missing", key)
			}
		}
	}
	compose, err := os.ReadFile("compose.yaml")
	if err != nil || !bytes.Contains(compose, []byte("temporal/dynamicconfig")) {
		t.Error("compose.yaml's Temporal does not use this dynamic config")
	}
}
