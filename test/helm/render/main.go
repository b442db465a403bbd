// Renders a Helm chart's templates as `helm template` does, for the chart's tests: Helm itself
// cannot be installed here, but its engine is Go's text/template with the sprig functions, which
// Debian packages. What Helm adds is reproduced below: include, required, fail, toYaml, toJson and
// tpl; .Values (the chart's values.yaml coalesced with -f files, later ones winning, null removing a
// key), .Release, .Chart and .Template; missing keys rendering as empty; templates whose names start
// with "_" defining only; NOTES.txt left out. Each rendered file is printed after a
// "# Source: <chart>/templates/<file>" line, as Helm prints them; a failure exits 1 with Helm's
// message shape on stderr.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"gopkg.in/yaml.v2"
)

// plain turns YAML's map[interface{}]interface{} into the map[string]interface{} Helm's values are.
func plain(v interface{}) interface{} {
	switch t := v.(type) {
	case map[interface{}]interface{}:
		m := make(map[string]interface{}, len(t))
		for k, x := range t {
			m[fmt.Sprint(k)] = plain(x)
		}
		return m
	case []interface{}:
		out := make([]interface{}, len(t))
		for i, x := range t {
			out[i] = plain(x)
		}
		return out
	default:
		return v
	}
}

func readYaml(path string) (map[string]interface{}, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var v interface{}
	if err := yaml.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if v == nil {
		return map[string]interface{}{}, nil
	}
	m, ok := plain(v).(map[string]interface{})
	if !ok {
		return nil, fmt.Errorf("%s: not a map", path)
	}
	return m, nil
}

// coalesce merges src over dst as Helm merges a values file over the chart's: maps recursively,
// anything else replaced, and a null removing the key.
func coalesce(dst, src map[string]interface{}) {
	for k, v := range src {
		if v == nil {
			delete(dst, k)
			continue
		}
		sm, sok := v.(map[string]interface{})
		dm, dok := dst[k].(map[string]interface{})
		if sok && dok {
			coalesce(dm, sm)
			continue
		}
		dst[k] = v
	}
}

func toYaml(v interface{}) string {
	data, err := yaml.Marshal(v)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(data), "\n")
}

func toJson(v interface{}) string {
	data, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(data)
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: render CHART_DIR [-f VALUES.yaml]...")
		os.Exit(64)
	}
	dir := os.Args[1]
	values, err := readYaml(filepath.Join(dir, "values.yaml"))
	check(err)
	for i := 2; i < len(os.Args); i++ {
		if os.Args[i] != "-f" || i+1 >= len(os.Args) {
			fmt.Fprintf(os.Stderr, "unknown argument %q\n", os.Args[i])
			os.Exit(64)
		}
		i++
		extra, err := readYaml(os.Args[i])
		check(err)
		coalesce(values, extra)
	}
	chart, err := readYaml(filepath.Join(dir, "Chart.yaml"))
	check(err)
	name := fmt.Sprint(chart["name"])
	meta := map[string]interface{}{
		"Name": chart["name"], "Version": chart["version"], "AppVersion": chart["appVersion"],
		"Description": chart["description"], "KubeVersion": chart["kubeVersion"], "Type": chart["type"],
	}

	root := template.New("chart")
	funcs := sprig.TxtFuncMap()
	delete(funcs, "env")
	delete(funcs, "expandenv")
	funcs["toYaml"] = toYaml
	funcs["toJson"] = toJson
	funcs["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil || (fmt.Sprint(v) == "" && fmt.Sprintf("%T", v) == "string") {
			return nil, errors.New(msg)
		}
		return v, nil
	}
	funcs["fail"] = func(msg string) (string, error) { return "", errors.New(msg) }
	funcs["include"] = func(name string, data interface{}) (string, error) {
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, name, data); err != nil {
			return "", err
		}
		return buf.String(), nil
	}
	funcs["tpl"] = func(text string, data interface{}) (string, error) {
		t, err := root.Clone()
		if err != nil {
			return "", err
		}
		t, err = t.New("tpl").Parse(text)
		if err != nil {
			return "", err
		}
		var buf bytes.Buffer
		err = t.Execute(&buf, data)
		return buf.String(), err
	}
	root.Funcs(funcs).Option("missingkey=zero")

	files, err := filepath.Glob(filepath.Join(dir, "templates", "*"))
	check(err)
	sort.Strings(files)
	var names []string
	for _, f := range files {
		base := filepath.Base(f)
		text, err := os.ReadFile(f)
		check(err)
		full := name + "/templates/" + base
		_, err = root.New(full).Parse(string(text))
		check(err)
		if !strings.HasPrefix(base, "_") && base != "NOTES.txt" {
			names = append(names, full)
		}
	}
	for _, full := range names {
		data := map[string]interface{}{
			"Values":   values,
			"Chart":    meta,
			"Release":  map[string]interface{}{"Name": "release", "Namespace": "default", "Service": "Helm", "IsInstall": true, "Revision": 1},
			"Template": map[string]interface{}{"Name": full, "BasePath": name + "/templates"},
		}
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, full, data); err != nil {
			fmt.Fprintf(os.Stderr, "Error: execution error at (%s): %v\n", full, err)
			os.Exit(1)
		}
		out := strings.ReplaceAll(buf.String(), "<no value>", "")
		if strings.TrimSpace(out) == "" {
			continue
		}
		fmt.Printf("---\n# Source: %s\n%s\n", full, strings.TrimLeft(out, "\n"))
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		os.Exit(1)
	}
}
