// kd-pbdecode decodes one Kubernetes protobuf document (k8s\x00 + runtime.Unknown) read from
// stdin with the real Go types of k8s.io/metrics (metrics.k8s.io/v1beta1) and apimachinery
// (metav1.Status), and prints it as JSON on stdout:
//
//	{"kind":..., "apiVersion":..., "reencodedIdentical": bool, "object": {...},
//	 "timestamps": {"<ns>/<name>": "<RFC 3339 with nanoseconds>"}, "windowsNs": {...}}
//
// "reencodedIdentical" says whether Go's own protobuf encoder, given the decoded object,
// writes exactly the input bytes. With -strict a difference is an error (exit 2) and the first
// differing offset is printed on stderr. It exists so that tests of our encoder cannot be
// fooled by our own decoder.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	metricsv1beta1 "k8s.io/metrics/pkg/apis/metrics/v1beta1"
)

type timed struct {
	key    string
	ts     metav1.Time
	window metav1.Duration
}

func times(obj runtime.Object) []timed {
	var out []timed
	add := func(m metav1.ObjectMeta, ts metav1.Time, w metav1.Duration) {
		key := m.Name
		if m.Namespace != "" {
			key = m.Namespace + "/" + m.Name
		}
		out = append(out, timed{key, ts, w})
	}
	switch o := obj.(type) {
	case *metricsv1beta1.NodeMetrics:
		add(o.ObjectMeta, o.Timestamp, o.Window)
	case *metricsv1beta1.PodMetrics:
		add(o.ObjectMeta, o.Timestamp, o.Window)
	case *metricsv1beta1.NodeMetricsList:
		for _, i := range o.Items {
			add(i.ObjectMeta, i.Timestamp, i.Window)
		}
	case *metricsv1beta1.PodMetricsList:
		for _, i := range o.Items {
			add(i.ObjectMeta, i.Timestamp, i.Window)
		}
	}
	return out
}

func main() {
	strict := flag.Bool("strict", false, "exit 2 unless Go re-encodes the input to the same bytes")
	dump := flag.String("reencoded", "", "also write Go's re-encoding to this file")
	flag.Parse()
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kd-pbdecode: reading stdin:", err)
		os.Exit(1)
	}
	scheme := runtime.NewScheme()
	if err := metricsv1beta1.AddToScheme(scheme); err != nil {
		fmt.Fprintln(os.Stderr, "kd-pbdecode: scheme:", err)
		os.Exit(1)
	}
	s := protobuf.NewSerializer(scheme, scheme)
	obj, gvk, err := s.Decode(in, nil, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kd-pbdecode: decode:", err)
		os.Exit(1)
	}
	var again bytes.Buffer
	if err := s.Encode(obj, &again); err != nil {
		fmt.Fprintln(os.Stderr, "kd-pbdecode: re-encode:", err)
		os.Exit(1)
	}
	same := bytes.Equal(again.Bytes(), in)
	if *dump != "" {
		if err := os.WriteFile(*dump, again.Bytes(), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "kd-pbdecode:", err)
			os.Exit(1)
		}
	}
	stamps := map[string]string{}
	windows := map[string]int64{}
	for _, t := range times(obj) {
		stamps[t.key] = t.ts.UTC().Format(time.RFC3339Nano)
		windows[t.key] = int64(t.window.Duration)
	}
	doc := map[string]any{
		"kind":               gvk.Kind,
		"apiVersion":         gvk.GroupVersion().String(),
		"reencodedIdentical": same,
		"object":             obj,
		"timestamps":         stamps,
		"windowsNs":          windows,
	}
	if err := json.NewEncoder(os.Stdout).Encode(doc); err != nil {
		fmt.Fprintln(os.Stderr, "kd-pbdecode: json:", err)
		os.Exit(1)
	}
	if *strict && !same {
		a, b := in, again.Bytes()
		i := 0
		for i < len(a) && i < len(b) && a[i] == b[i] {
			i++
		}
		lo := max(0, i-16)
		fmt.Fprintf(os.Stderr, "kd-pbdecode: Go re-encodes differently: first difference at byte %d of %d (Go: %d bytes)\n  ours: % x\n  Go:   % x\n",
			i, len(a), len(b), a[lo:min(len(a), i+16)], b[lo:min(len(b), i+16)])
		os.Exit(2)
	}
}
