{{/* The release's base name: the release name when it already says hookwarden. */}}
{{- define "hookwarden.fullname" -}}
{{- if contains "hookwarden" .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-hookwarden" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Name of the operator's Deployment, ServiceAccount, RBAC objects and Lease. */}}
{{- define "hookwarden.operator" -}}
{{- printf "%s-operator" (include "hookwarden.fullname" .) -}}
{{- end -}}

{{- define "hookwarden.selectorLabels" -}}
app.kubernetes.io/name: hookwarden-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "hookwarden.labels" -}}
{{ include "hookwarden.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: hookwarden
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* metadata.annotations, when there are any. */}}
{{- define "hookwarden.annotations" -}}
{{- $all := merge (deepCopy (default dict .extra)) (deepCopy .root.Values.commonAnnotations) -}}
{{- with $all }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "hookwarden.operatorImage" -}}
{{- printf "%s:%s" .Values.operator.image.repository (default .Chart.AppVersion .Values.operator.image.tag) -}}
{{- end -}}

{{- define "hookwarden.receiverImage" -}}
{{- printf "%s:%s" .Values.receiver.image.repository (default .Chart.AppVersion .Values.receiver.image.tag) -}}
{{- end -}}

{{/* A PromQL series selector: (list NAME MATCHERS...) gives NAME{MATCHERS,...}, each MATCHERS
a comma-separated list, empty ones left out. */}}
{{- define "hookwarden.series" -}}
{{- $matchers := list -}}
{{- range rest . }}{{ if . }}{{ $matchers = append $matchers . }}{{ end }}{{ end -}}
{{- printf "%s{%s}" (first .) (join "," $matchers) -}}
{{- end -}}

{{/* A Prometheus template action, {{ TEXT }}, in text Helm renders. */}}
{{- define "hookwarden.promAction" -}}
{{- printf "{{ %s }}" . -}}
{{- end -}}

{{/* The Prometheus template that prints the number QUERY (a printf format whose one %s
is the alert's webhook label) gives, rounded, or 0 when it gives nothing. */}}
{{- define "hookwarden.promCount" -}}
{{- include "hookwarden.promAction" (printf "with printf %q $labels.webhook | query" .) -}}
{{- include "hookwarden.promAction" ". | first | value | printf \"%.0f\"" -}}
{{- include "hookwarden.promAction" "else" }}0{{ include "hookwarden.promAction" "end" -}}
{{- end -}}
