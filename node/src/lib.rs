//! Flotilla node agent (being written).
