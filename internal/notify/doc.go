// Package notify tells people what an apply did: it turns an apply's
// outcome into an Event (success, failure, blocked, revert) and posts it as
// JSON, with a Slack-compatible text, to the URLs of notify: in the
// background, retried with backoff, never delaying or failing the deploy.
//
// A notification URL is a credential: it is never logged, stored or shown.
// Messages call a destination notify[i] and name at most its host.
package notify
