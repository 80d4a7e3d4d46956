#!/usr/bin/env bash
# Cloud Scheduler -> Dataflow flex template: caption new images every night at 02:00 UTC.
# Prerequisite: `make flex-template PROJECT=... REGION=... BUCKET=...` built the template.
# If last night's job still holds the output's lease, this launch's launcher exits 75 ("try
# again later") and the job ends failed at launch with the busy line in its log: a skipped
# night, nothing to retry; the next launch picks the images up.
set -euo pipefail
PROJECT=${PROJECT:?} REGION=${REGION:?} BUCKET=${BUCKET:?}
SERVICE_ACCOUNT=${SERVICE_ACCOUNT:-beamcap-scheduler@${PROJECT}.iam.gserviceaccount.com}
gcloud scheduler jobs create http beamcap-nightly \
  --project "$PROJECT" --location "$REGION" --schedule "0 2 * * *" --time-zone UTC \
  --http-method POST \
  --uri "https://dataflow.googleapis.com/v1b3/projects/${PROJECT}/locations/${REGION}/flexTemplates:launch" \
  --oauth-service-account-email "$SERVICE_ACCOUNT" \
  --message-body "{
    \"launchParameter\": {
      \"jobName\": \"beamcap-nightly\",
      \"containerSpecGcsPath\": \"gs://${BUCKET}/templates/beamcap-caption.json\",
      \"parameters\": {
        \"config\": \"dataflow-gpu\",
        \"input\": \"gs://${BUCKET}/incoming/\",
        \"model\": \"gs://${BUCKET}/models/v1\",
        \"output\": \"gs://${BUCKET}/captions\",
        \"only-new\": \"true\"
      }
    }
  }"
