"""The security context every Job's pod gets: Pod Security "restricted"
(https://kubernetes.io/docs/concepts/security/pod-security-standards/)."""

from __future__ import annotations

import kubernetes.client


def restrict(pod: kubernetes.client.V1PodSpec, container: kubernetes.client.V1Container) -> None:
    """What Pod Security "restricted" requires of the pod and its container, where the kubernetes executor set
    nothing (it sets no security context, so the runtime's defaults held: privilege escalation allowed, the
    default capabilities, no seccomp profile): the image's non-root user, the runtime's seccomp profile, no
    privilege escalation, every capability dropped. A container the executor made privileged (its ``privileged``
    setting, or an Apptainer deployment) is left as it asked."""
    own = container.security_context or kubernetes.client.V1SecurityContext()
    if own.privileged:
        return
    if own.allow_privilege_escalation is None:
        own.allow_privilege_escalation = False
    if own.capabilities is None:
        own.capabilities = kubernetes.client.V1Capabilities(drop=["ALL"])
    container.security_context = own
    context = pod.security_context or kubernetes.client.V1PodSecurityContext()
    if context.run_as_non_root is None:
        context.run_as_non_root = True
    if context.seccomp_profile is None:
        context.seccomp_profile = kubernetes.client.V1SeccompProfile(type="RuntimeDefault")
    pod.security_context = context
