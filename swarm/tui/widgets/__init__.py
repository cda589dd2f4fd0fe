"""The TUI's widgets, one per file."""

from swarm.tui.widgets.agent_detail import AgentDetailPane
from swarm.tui.widgets.event_log import EventLog
from swarm.tui.widgets.expert_load import ExpertLoad
from swarm.tui.widgets.header_bar import SimHeader
from swarm.tui.widgets.metrics_panel import MetricsPanel
from swarm.tui.widgets.roster import Roster
from swarm.tui.widgets.runtime_panel import RuntimePanel
from swarm.tui.widgets.world_view import WorldView

__all__ = ["AgentDetailPane", "EventLog", "ExpertLoad", "MetricsPanel", "Roster", "RuntimePanel", "SimHeader",
           "WorldView"]
