"""Trust: bindings (an org's approval of its agent for a capability scope), org trust settings,
invites and org onboarding."""
