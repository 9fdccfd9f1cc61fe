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

{{- /* The one image reference of every CityScale pod this chart runs and of the ConfigMap's CITYSCALE_IMAGE:
registry/cityscale:<git sha> (values.schema.json refuses a mutable tag such as `dev`). */ -}}
{{- define "cityscale.image" -}}
{{ required "image.repository is required" .Values.image.repository }}:{{ required "image.tag is required (the git SHA)" .Values.image.tag }}
{{- end -}}

{{- /* The slim serving image (Dockerfile.serving) of the InferenceService's CPU predictor and transformer, the
ConfigMap's CITYSCALE_SERVING_IMAGE: registry/cityscale-serving at the same immutable tag. */ -}}
{{- define "cityscale.servingImage" -}}
{{ required "image.servingRepository is required" .Values.image.servingRepository }}:{{ required "image.tag is required (the git SHA)" .Values.image.tag }}
{{- end -}}

{{- define "cityscale.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "cityscale.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: 10001
capabilities:
  drop: ["ALL"]
{{- end -}}
