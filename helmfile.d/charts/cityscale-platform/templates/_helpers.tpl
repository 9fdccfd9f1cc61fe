{{- define "cityscale.labels" -}}
app.kubernetes.io/part-of: cityscale
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
cityscale.io/environment: {{ .Values.environment }}
{{- end -}}

{{- define "cityscale.wiAnnotation" -}}
{{- if . }}
annotations:
  iam.gke.io/gcp-service-account: {{ . | quote }}
{{- end }}
{{- end -}}
