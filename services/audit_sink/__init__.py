"""The audit sink: ticket notes (ServiceNow, Jira) and a signed webhook, fed by the durable audit stream."""
