// Package deploy holds the deployment files; this test checks them.
package deploy

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// scaledObject is the part of KEDA's ScaledObject schema we use; strict
// decoding refuses any field it does not name.
type scaledObject struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name   string            `json:"name"`
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		ScaleTargetRef struct {
			Name string `json:"name"`
		} `json:"scaleTargetRef"`
		MinReplicaCount int `json:"minReplicaCount"`
		MaxReplicaCount int `json:"maxReplicaCount"`
		PollingInterval int `json:"pollingInterval"`
		CooldownPeriod  int `json:"cooldownPeriod"`
		Triggers        []struct {
			Type              string            `json:"type"`
			Metadata          map[string]string `json:"metadata"`
			AuthenticationRef struct {
				Name string `json:"name"`
			} `json:"authenticationRef"`
		} `json:"triggers"`
	} `json:"spec"`
}

type triggerAuthentication struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		SecretTargetRef []struct {
			Parameter string `json:"parameter"`
			Name      string `json:"name"`
			Key       string `json:"key"`
		} `json:"secretTargetRef"`
	} `json:"spec"`
}

// objects decodes every document of every manifest strictly into its
// upstream type (apps/v1, core/v1) or the KEDA schema above.
func objects(t *testing.T) map[string]any {
	t.Helper()
	files, err := filepath.Glob("kubernetes/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	out := map[string]any{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range bytes.Split(b, []byte("\n---\n")) {
			var head struct{ Kind string }
			if err := yaml.Unmarshal(doc, &head); err != nil {
				t.Fatalf("%s #%d: %v", f, i, err)
			}
			var obj any
			switch head.Kind {
			case "Deployment":
				obj = &appsv1.Deployment{}
			case "Service":
				obj = &corev1.Service{}
			case "Secret":
				obj = &corev1.Secret{}
			case "ScaledObject":
				obj = &scaledObject{}
			case "TriggerAuthentication":
				obj = &triggerAuthentication{}
			default:
				t.Fatalf("%s #%d: unexpected kind %q", f, i, head.Kind)
			}
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				t.Fatalf("%s #%d (%s): %v", f, i, head.Kind, err)
			}
			var name struct{ Metadata struct{ Name string } }
			_ = yaml.Unmarshal(doc, &name)
			out[head.Kind+"/"+name.Metadata.Name] = obj
		}
	}
	return out
}

func TestManifests(t *testing.T) {
	objs := objects(t)
	w, ok := objs["Deployment/pingfleet-worker"].(*appsv1.Deployment)
	if !ok {
		t.Fatal("no worker Deployment")
	}
	pod := w.Spec.Template.Spec
	sysctl := false
	for _, s := range pod.SecurityContext.Sysctls {
		sysctl = sysctl || (s.Name == "net.ipv4.ping_group_range" && s.Value == "0 2147483647")
	}
	if !sysctl {
		t.Error("worker pods lack the ping_group_range sysctl")
	}
	c := pod.Containers[0]
	if c.LivenessProbe == nil || c.ReadinessProbe == nil {
		t.Error("worker lacks liveness or readiness probe")
	}
	if caps := c.SecurityContext.Capabilities; caps == nil || len(caps.Add) != 0 {
		t.Error("worker must add no capability (no NET_RAW)")
	}
	if !strings.Contains(strings.Join(c.Args, " "), "--metrics-addr :9110") || c.Ports[0].ContainerPort != 9110 {
		t.Error("worker probes need --metrics-addr :9110 and its port")
	}
	secret, ok := objs["Secret/pingfleet-redis"].(*corev1.Secret)
	if !ok {
		t.Fatal("no Redis Secret")
	}
	ref := c.Env[0].ValueFrom.SecretKeyRef
	if ref.Name != secret.Name || secret.StringData[ref.Key] == "" {
		t.Errorf("worker reads Redis from %s/%s, which the Secret lacks", ref.Name, ref.Key)
	}
	so, ok := objs["ScaledObject/pingfleet-worker"].(*scaledObject)
	if !ok {
		t.Fatal("no ScaledObject")
	}
	if so.APIVersion != "keda.sh/v1alpha1" || so.Spec.ScaleTargetRef.Name != w.Name {
		t.Errorf("ScaledObject %s targets %q; want keda.sh/v1alpha1 on %q", so.APIVersion, so.Spec.ScaleTargetRef.Name, w.Name)
	}
	// The waiting tasks are in the batches' lanes, which come and go: KEDA
	// reads their sum, which serve exports, from Prometheus.
	if len(so.Spec.Triggers) != 1 || so.Spec.Triggers[0].Type != "prometheus" ||
		!strings.Contains(so.Spec.Triggers[0].Metadata["query"], `pingfleet_lane_tasks{state="pending"}`) || so.Spec.Triggers[0].Metadata["threshold"] == "" {
		t.Errorf("ScaledObject triggers %+v; want one prometheus trigger on the lanes' pending tasks", so.Spec.Triggers)
	}
	if _, ok := objs["Service/pingfleet-api"]; !ok {
		t.Error("no API Service")
	}
}

func TestPrometheusConfig(t *testing.T) {
	b, err := os.ReadFile("prometheus/prometheus.yml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Global struct {
			ScrapeInterval string `json:"scrape_interval"`
		} `json:"global"`
		ScrapeConfigs []struct {
			JobName      string `json:"job_name"`
			DNSSDConfigs []struct {
				Names []string `json:"names"`
				Type  string   `json:"type"`
				Port  int      `json:"port"`
			} `json:"dns_sd_configs"`
			StaticConfigs []struct {
				Targets []string `json:"targets"`
			} `json:"static_configs"`
		} `json:"scrape_configs"`
	}
	if err := yaml.UnmarshalStrict(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if len(cfg.ScrapeConfigs) != 2 || cfg.ScrapeConfigs[0].DNSSDConfigs[0].Port != 9110 {
		t.Errorf("scrape configs %+v: want the workers on :9110 and the API", cfg.ScrapeConfigs)
	}
}
