"""Small programs showing how other nodes use roma_ros (see roma_ros.client)."""
