{{- define "tes-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tes-gateway.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tes-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tes-gateway.labels" -}}
helm.sh/chart: {{ include "tes-gateway.chart" . }}
{{ include "tes-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "tes-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tes-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tes-gateway.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "tes-gateway.secretName" -}}
{{- default (include "tes-gateway.fullname" .) .Values.existingSecret }}
{{- end }}

{{/* Restarts the pods when the configuration or the chart's own Secret changes. */}}
{{- define "tes-gateway.checksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if not .Values.existingSecret }}
checksum/secret: {{ include (print .Template.BasePath "/secret.yaml") . | sha256sum }}
{{- end }}
{{- end }}

{{/* What every gateway process needs: the configuration file and the Redis URL. */}}
{{- define "tes-gateway.commonEnv" -}}
- name: TES_GATEWAY_CONFIG
  value: /etc/tes-gateway/gateway.yaml
- name: TES_GATEWAY_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "tes-gateway.secretName" . }}
      key: redis-url
{{- end }}

{{/*
A volume that is either a claim or a host directory. Takes a dict: claim, hostPath (the default path
when the values give none: "" means none) and name.
*/}}
{{- define "tes-gateway.claimOrHostPath" -}}
- name: {{ .name }}
{{- if .claim }}
  persistentVolumeClaim:
    claimName: {{ .claim }}
{{- else }}
  hostPath:
    path: {{ required (printf "%s: set existingClaim or hostPath" .name) .hostPath }}
    type: Directory
{{- end }}
{{- end }}
